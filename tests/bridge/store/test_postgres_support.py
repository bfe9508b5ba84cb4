"""Checks the throwaway PostgreSQL harness itself, so real-database tests can trust it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import (
    PostgresCluster,
    PostgresClusterError,
    PostgresUnavailable,
    ensure_postgres_installed,
)

# Generous: on a bare CI machine the first fixture may apt-get install PostgreSQL.
pytestmark = pytest.mark.timeout(600)


def _bin_dir_or_skip() -> Path:
    try:
        return ensure_postgres_installed()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL UNAVAILABLE - real-database tests skipped: {exc.reason}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    pg = PostgresCluster(base_dir=tmp_path_factory.mktemp("pg"), bin_dir=_bin_dir_or_skip())
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


async def _fetch(cluster: PostgresCluster, dbname: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(cluster.dsn(dbname))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_create_database_and_connect(cluster: PostgresCluster) -> None:
    url = cluster.create_database("connect_check")
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{cluster.port}/connect_check"
    assert cluster.admin_dsn == f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"

    conn = await asyncpg.connect(
        host=cluster.host, port=cluster.port, user="postgres", database="connect_check"
    )
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("show fsync") == "off"
        assert await conn.fetchval("show max_connections") == "300"
    finally:
        await conn.close()

    # The returned URL is what the app will be configured with: SQLAlchemy must accept it.
    engine = create_async_engine(url)
    try:
        async with engine.connect() as sa_conn:
            assert (await sa_conn.execute(text("select current_database()"))).scalar_one() == (
                "connect_check"
            )
    finally:
        await engine.dispose()

    cluster.drop_database("connect_check")
    cluster.drop_database("connect_check")  # IF EXISTS: dropping twice is fine
    assert (
        cluster.execute("select count(*) from pg_database where datname = 'connect_check'").strip()
        == "0"
    )


async def test_create_from_template_copies_tables(cluster: PostgresCluster) -> None:
    cluster.create_database("tpl_source")
    cluster.execute(
        "create table greeting (id int primary key, body text not null);"
        "insert into greeting values (1, 'hello'), (2, 'world')",
        dbname="tpl_source",
    )
    # No connection to tpl_source may remain open here (CREATE DATABASE ... TEMPLATE).
    cluster.create_database("tpl_copy", template="tpl_source")

    rows = await _fetch(cluster, "tpl_copy", "select id, body from greeting order by id")
    assert [tuple(r) for r in rows] == [(1, "hello"), (2, "world")]

    # The copy is independent of its template.
    cluster.execute("insert into greeting values (3, 'copy only')", dbname="tpl_copy")
    source = cluster.execute("select count(*) from greeting", dbname="tpl_source")
    assert source.strip() == "2"


async def test_restart_keeps_data_and_port(cluster: PostgresCluster) -> None:
    cluster.create_database("restart_check")
    cluster.execute(
        "create table kept (v text); insert into kept values ('x')", dbname="restart_check"
    )
    port = cluster.port

    cluster.restart()

    assert cluster.port == port
    assert cluster.is_running
    rows = await _fetch(cluster, "restart_check", "select v from kept")
    assert [r["v"] for r in rows] == ["x"]


@pytest.mark.parametrize(
    "name",
    ["", "Upper", "has space", "semi;colon", 'quo"te', "dash-name", "ünicode", "x\n", "a" * 64],
)
def test_invalid_database_names_raise(cluster: PostgresCluster, name: str) -> None:
    with pytest.raises(ValueError):
        cluster.create_database(name)
    with pytest.raises(ValueError):
        cluster.create_database("valid_name_unused", template=name)
    with pytest.raises(ValueError):
        cluster.drop_database(name)
    assert "valid_name_unused" not in cluster.execute("select datname from pg_database")


def test_builtin_databases_cannot_be_dropped(cluster: PostgresCluster) -> None:
    for name in ("postgres", "template0", "template1"):
        with pytest.raises(ValueError):
            cluster.drop_database(name)


def test_stop_is_idempotent_and_failed_start_shows_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pg = PostgresCluster(
        base_dir=tmp_path_factory.mktemp("pg_lifecycle"), bin_dir=_bin_dir_or_skip()
    )
    pg.stop()  # never started: no-op
    try:
        pg.start()
        pg.start()  # already running: no-op
        pg.stop()
        pg.stop()  # already stopped: no-op
        assert not pg.is_running

        # Break the config so the server refuses to start; the error must say why.
        with (pg.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 'not a size'\n")
        with pytest.raises(PostgresClusterError) as excinfo:
            pg.start()
        message = str(excinfo.value)
        assert "server log tail" in message
        assert "shared_buffers" in message
        assert not pg.is_running
    finally:
        pg.close()
    pg.close()  # idempotent
