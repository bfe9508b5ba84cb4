"""The ``bridge`` command as an operator meets it: config errors, defaults, migrate, tokens,
start-up with nothing configured and a graceful stop that hands unfinished work back.

Most of these run ``python -m bridge`` as a real process: exit codes, stderr and signals only
exist from the outside.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from bridge.ports.contract import Capabilities, Channel, ChannelContext, ChannelPlugin
from bridge.ports.registry import ChannelRegistry, configured_channels
from bridge.settings import ConfigError, load_settings
from bridge.store.migrate import head_revision
from bridge.store.models import MessageState
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import webhook_agent_config
from tests.support.processes import (
    bridge_database,
    run_cli,
    serving_bridge,
    wait_until,
    write_toml,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``BRIDGE_*`` variable of the developer's shell, and a cwd of our own."""
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# --- bad config: one line, exit 2, the key named ----------------------------------------------


def assert_config_error(
    tmp_path: Path, config: Path, *expected: str, args: tuple[str, ...] = ()
) -> None:
    """``serve`` refuses the config in one stderr line and exit 2, before touching the DB."""
    result = run_cli("serve", "--config", str(config), *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"bridge: config error: {config}: "), "names the file first"
    for text in expected:
        assert text in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "data").exists(), "a bad config must fail before the database"


def test_malformed_toml(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("[database]\nurl = 'sqlite+aiosqlite:///x.db\n")
    assert_config_error(tmp_path, config, "bridge.toml", "malformed TOML")


def test_unknown_backend_names_the_key(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "bridge.toml", {"agents": [{"slug": "assistant", "backend": "telepathy"}]}
    )
    assert_config_error(tmp_path, config, "agents[0].backend", "telepathy")


def test_duplicate_slug_names_the_key(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "bridge.toml", {"agents": [{"slug": "assistant"}, {"slug": "assistant"}]}
    )
    assert_config_error(tmp_path, config, "agents[1].slug", "duplicate", "'assistant'")


def test_webhook_backend_without_secret_names_the_key(tmp_path: Path) -> None:
    agent = {"slug": "assistant", "backend": "webhook", "webhook": {"url": "http://127.0.0.1:9"}}
    config = write_toml(tmp_path / "bridge.toml", {"agents": [agent]})
    assert_config_error(tmp_path, config, "agents[0].webhook.secret")


def test_unknown_channel_section_names_the_key(tmp_path: Path) -> None:
    agent = {"slug": "assistant", "nosuchchannel": {"token": "x"}}
    config = write_toml(tmp_path / "bridge.toml", {"agents": [agent]})
    assert_config_error(tmp_path, config, "agents[0].nosuchchannel", "unknown channel")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_config_error(tmp_path, tmp_path / "nope.toml", "nope.toml", "not found")


# --- a channel's own settings ------------------------------------------------------------------


class FakeChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr
    channel_id: str = "general"


def never_created(*, context: ChannelContext[FakeChatSettings]) -> Channel:
    raise AssertionError("configured_channels only validates; it creates nothing")


fakechat_plugin = ChannelPlugin(
    # A channel whose section needs a secret: the shape of the Slack or Discord sections.
    name="fakechat",
    settings_model=FakeChatSettings,
    capabilities=Capabilities(),
    create=never_created,
)


def fakechat_settings(section: dict[str, Any]) -> list[Any]:
    settings = load_settings(overrides={"agents": [{"slug": "assistant", "fakechat": section}]})
    found = configured_channels(settings, ChannelRegistry(plugins={"fakechat": fakechat_plugin}))
    return [configured for configured in found if configured.plugin.name == "fakechat"]


def test_missing_channel_secret_is_one_line_naming_the_key(clean_env: None) -> None:
    with pytest.raises(ConfigError) as raised:
        fakechat_settings({"channel_id": "C1"})
    message = str(raised.value)
    assert "agents[0].fakechat.bot_token" in message
    assert "required" in message.lower()
    assert "\n" not in message


def test_disabled_channel_section_is_not_validated(clean_env: None) -> None:
    assert fakechat_settings({"enabled": False, "channel_id": "C1"}) == []


def test_complete_channel_section_is_parsed_by_its_channel(clean_env: None) -> None:
    (configured,) = fakechat_settings({"bot_token": "xoxb-1", "channel_id": "C1"})
    assert isinstance(configured.settings, FakeChatSettings)
    assert configured.settings.bot_token.get_secret_value() == "xoxb-1"
    assert configured.agent.slug == "assistant"


# --- settings sources and defaults -------------------------------------------------------------


def test_environment_overrides_the_toml_file(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(
        tmp_path / "bridge.toml",
        {"database": {"url": sqlite_url(tmp_path / "from-toml.db"), "pool_size": 3}},
    )
    monkeypatch.setenv("BRIDGE_DATABASE__URL", sqlite_url(tmp_path / "from-env.db"))
    settings = load_settings(config)
    assert settings.database.url.get_secret_value() == sqlite_url(tmp_path / "from-env.db")
    assert settings.database.pool_size == 3, "the rest of the TOML table still applies"


def test_defaults_with_nothing_configured(clean_env: None) -> None:
    settings = load_settings()
    assert settings.database.url.get_secret_value() == "sqlite+aiosqlite:///./data/bridge.db"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert [(a.slug, a.backend) for a in settings.agents] == [("assistant", "echo")]


def test_secrets_stay_out_of_repr_and_str(clean_env: None) -> None:
    agent = {
        "slug": "assistant",
        "backend": "webhook",
        "webhook": {"url": "http://127.0.0.1:9/agent", "secret": "very-secret-value"},
    }
    settings = load_settings(overrides={"agents": [agent]})
    assert "very-secret-value" not in repr(settings)
    assert "very-secret-value" not in str(settings)
    assert settings.agents[0].webhook is not None
    assert settings.agents[0].webhook.secret.get_secret_value() == "very-secret-value"


def test_channel_secrets_stay_out_of_repr(clean_env: None) -> None:
    """Channel sections are raw until their channel validates them: still never printed."""
    agent = {"slug": "assistant", "fakechat": {"bot_token": "xoxb-very-secret"}}
    settings = load_settings(overrides={"agents": [agent]})
    for text in (repr(settings), str(settings), repr(settings.agents[0])):
        assert "xoxb-very-secret" not in text
        assert "fakechat" in text


# --- migrate and serve on an un-migrated database ----------------------------------------------


def test_migrate_creates_the_schema_and_prints_the_revision(tmp_path: Path) -> None:
    env = {"BRIDGE_DATABASE__URL": sqlite_url(tmp_path / "fresh.db")}
    migrated = run_cli("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"is at revision {head_revision()}" in migrated.stdout
    with sqlite3.connect(tmp_path / "fresh.db") as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()


def test_serve_refuses_an_unmigrated_database_in_one_line(tmp_path: Path) -> None:
    env = {"BRIDGE_DATABASE__URL": sqlite_url(tmp_path / "fresh.db")}
    refused = run_cli("serve", "--port", "0", cwd=tmp_path, env=env)
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "run `bridge migrate`" in line
    assert "Traceback" not in refused.stderr


# --- an unusable SQLite path: one line, exit 1, for every command ----------------------------


def _file_in_the_way(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "file.txt").write_text("not a directory\n")
    return tmp_path / "file.txt" / "bridge.db", f"Not a directory: {tmp_path / 'file.txt'}"


BAD_SQLITE_PATHS: dict[str, Callable[[Path], tuple[Path, str]]] = {
    # Tests run as root, where a chmod'ed directory stays writable: /proc refuses even root.
    "a directory that cannot be created": lambda _: (
        Path("/proc/nope/bridge.db"),
        "No such file or directory: /proc/nope",
    ),
    "a file where its directory must be": _file_in_the_way,
    "a path that is a directory": lambda tmp_path: (tmp_path, f"Is a directory: {tmp_path}"),
    "a read-only location": lambda _: (
        Path("/proc/bridge.db"),
        "unable to open database file: /proc/bridge.db",
    ),
}


@pytest.mark.parametrize("where", list(BAD_SQLITE_PATHS))
def test_an_unusable_sqlite_path_is_one_line_and_exit_1(tmp_path: Path, where: str) -> None:
    path, reason = BAD_SQLITE_PATHS[where](tmp_path)
    url = sqlite_url(path)
    before = sorted(tmp_path.rglob("*"))
    for command in (("migrate",), ("serve", "--port", "0"), ("token", "create", "alice")):
        result = run_cli(*command, cwd=tmp_path, env={"BRIDGE_DATABASE__URL": url})
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"bridge: cannot use the database at {url}: {reason}"
        ], command
        assert result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before, "nothing created"


# --- tokens ------------------------------------------------------------------------------------


def token_rows(db: Path) -> list[tuple[str, str, int, str | None]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT name, token_hash, is_admin, revoked_at FROM api_tokens ORDER BY id"
        ).fetchall()


def test_token_create_revoke_and_recreate(tmp_path: Path) -> None:
    """Tokens are shown once and stored only as their SHA-256; names are unique while active."""
    db = tmp_path / "bridge.db"
    env = {"BRIDGE_DATABASE__URL": sqlite_url(db)}
    assert run_cli("migrate", cwd=tmp_path, env=env).returncode == 0

    created = run_cli("token", "create", "alice", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("brg_") and len(token) > 30
    ((name, stored_hash, is_admin, revoked_at),) = token_rows(db)
    assert (name, is_admin, revoked_at) == ("alice", 0, None)
    assert stored_hash == hashlib.sha256(token.encode()).hexdigest()
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    assert token not in dump, "the token itself must never be stored"

    again = run_cli("token", "create", "alice", cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1 and "alice" in again.stderr
    assert "Traceback" not in again.stderr

    revoked = run_cli("token", "revoke", "alice", cwd=tmp_path, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert token_rows(db)[0][3] is not None
    revoked_again = run_cli("token", "revoke", "alice", cwd=tmp_path, env=env)
    assert revoked_again.returncode == 1
    assert len(revoked_again.stderr.strip().splitlines()) == 1
    assert "Traceback" not in revoked_again.stderr

    recreated = run_cli("token", "create", "alice", cwd=tmp_path, env=env)
    assert recreated.returncode == 0, recreated.stderr
    new_token = recreated.stdout.strip().splitlines()[-1]
    assert new_token.startswith("brg_") and new_token != token
    ((_, new_hash, _, new_revoked_at),) = token_rows(db)
    assert new_hash == hashlib.sha256(new_token.encode()).hexdigest()
    assert new_revoked_at is None

    admin = run_cli("token", "create", "root", "--admin", cwd=tmp_path, env=env)
    assert admin.returncode == 0, admin.stderr
    assert [(row[0], row[2]) for row in token_rows(db)] == [("alice", 0), ("root", 1)]


# --- start with nothing configured, like `make run` --------------------------------------------


async def test_starts_with_nothing_configured_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """Fresh checkout, no config, no env: migrate, serve, answer health checks, stop with 0."""
    migrated = await _run_cli_async("migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr

    async with serving_bridge(None, cwd=tmp_path) as bridge:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{bridge.url}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok"}
            async with http.get(f"{bridge.url}/readyz") as response:
                assert response.status == 200, await response.text()
        bridge.terminate()
        assert await bridge.wait(within=10) == 0, bridge.log
        assert "shutdown.finished" in bridge.log
        assert "Traceback" not in bridge.log
    assert (tmp_path / "data" / "bridge.db").is_file()


async def _run_cli_async(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, cwd=cwd)


# --- SIGTERM while a reply is being worked on -----------------------------------------------


@pytest.fixture
def slow_agent(webhook_agent: FakeWebhookAgent) -> FakeWebhookAgent:
    """A webhook agent that holds every answer far longer than any test waits."""
    webhook_agent.delay_seconds = 120.0
    return webhook_agent


async def test_sigterm_hands_in_flight_work_back(
    database_url: str, tmp_path: Path, slow_agent: FakeWebhookAgent
) -> None:
    """A stop in the middle of an answer exits 0 and leaves the message pending and unclaimed,
    so the next process answers it: a deploy loses nothing."""
    agents = [webhook_agent_config(slow_agent, timeout_seconds=300.0)]
    config = write_toml(
        tmp_path / "bridge.toml",
        {
            "database": {"url": database_url},
            "pipeline": {"shutdown_grace_seconds": 0.5, "poll_interval_seconds": 0.2},
            "agents": agents,
        },
    )
    async with bridge_database(database_url, agents) as db:
        ingested = await db.ingest("take your time", message_id="sigterm-1")
        async with serving_bridge(config, cwd=tmp_path) as bridge:
            await wait_until(
                lambda: len(slow_agent.requests) == 1, within=15, what="the agent to be asked"
            )
            assert (await db.message(ingested.message_id)).state == MessageState.ANSWERING
            bridge.terminate()
            assert await bridge.wait(within=10) == 0, bridge.log
            assert "shutdown.finished" in bridge.log
            assert "released=1" in bridge.log, bridge.log
        message = await db.message(ingested.message_id)
        assert (message.state, message.claimed_by) == (MessageState.PENDING, None)
        assert [m.role for m in await db.messages()] == ["user"], "no reply was stored"
