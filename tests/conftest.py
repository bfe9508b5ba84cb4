"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL that the test
session starts itself (installed with apt when missing)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from bridge.store.migrate import upgrade_url
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET
from tests.support.postgres import PostgresCluster, PostgresUnavailable, ensure_postgres_installed

TEMPLATE_DB = "bridge_template"
WITHOUT_POSTGRES = "BRIDGE_TESTS_WITHOUT_POSTGRES"


def may_run_without_postgres(environ: Mapping[str, str]) -> bool:
    """Only a developer who asks for it, never CI: under ``CI=true`` a missing PostgreSQL is
    an error (Chromium is never optional: tests/support/browser.py fails without it)."""
    return environ.get(WITHOUT_POSTGRES) == "1" and environ.get("CI", "").lower() != "true"


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster | None]:
    try:
        ensure_postgres_installed()
    except PostgresUnavailable as error:
        if not may_run_without_postgres(os.environ):
            # Half the promises are PostgreSQL's (several processes, LISTEN/NOTIFY, row
            # claims): a suite that skips them must not pass by accident.
            pytest.fail(
                f"PostgreSQL is required and unavailable: {error} (set {WITHOUT_POSTGRES}=1"
                " to run only the SQLite half; never under CI=true)",
                pytrace=False,
            )
        warnings.warn(f"NO POSTGRESQL: PostgreSQL tests are skipped: {error}", stacklevel=1)
        yield None
        return
    cluster = PostgresCluster(base_dir=tmp_path_factory.mktemp("postgres"))
    cluster.start()
    try:
        asyncio.run(upgrade_url(cluster.create_database(TEMPLATE_DB)))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "bridge.db"
    asyncio.run(upgrade_url(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each dialect for one test."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "bridge.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    cluster: PostgresCluster | None = request.getfixturevalue("postgres_cluster")
    if cluster is None:
        pytest.skip(f"NO POSTGRESQL available ({WITHOUT_POSTGRES}=1; see the warning above)")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:16]}", template=TEMPLATE_DB)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster | None) -> str:
    """A fresh, migrated PostgreSQL database, for tests that need several processes."""
    if postgres_cluster is None:
        pytest.skip(f"NO POSTGRESQL available ({WITHOUT_POSTGRES}=1; see the warning above)")
    return postgres_cluster.create_database(f"t_{uuid.uuid4().hex[:16]}", template=TEMPLATE_DB)


@pytest.fixture
async def webhook_agent() -> AsyncIterator[FakeWebhookAgent]:
    """A strict fake webhook agent; ``webhook_agent_config`` points an agent at it."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        yield fake
