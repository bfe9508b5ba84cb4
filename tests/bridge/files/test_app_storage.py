"""The app with ``storage.url`` set: it opens the S3 store at start and closes it at stop; a
missing credentials variable stops it before anything starts, in one line naming it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bridge.app import build_app
from bridge.appkeys import FILES
from bridge.files.s3 import S3FileStore
from bridge.files.store import content_key
from bridge.settings import ConfigError
from tests.bridge.files.conftest import KEY_ID_ENV, SECRET_ENV, S3Bucket
from tests.support.harness import make_settings, running_bridge
from tests.support.processes import run_cli, write_toml


async def test_app_uses_the_s3_store(database_url: str, s3_bucket: S3Bucket) -> None:
    settings = make_settings(database_url).model_copy(
        update={"storage": s3_bucket.storage(prefix="app")}
    )
    data = b"an attachment"
    key = content_key(7, hashlib.sha256(data).hexdigest())
    async with running_bridge(settings) as bridge:
        store = bridge.app[FILES]
        assert isinstance(store, S3FileStore)
        assert (store.bucket, store.prefix) == (s3_bucket.name, "app/")
        await store.put(key, data)
        assert await s3_bucket.names() == {f"app/{key}"}
        assert await store.get(key) == data
    with pytest.raises(RuntimeError, match="after close"):
        await store.exists(key)


@pytest.mark.parametrize("unset", [KEY_ID_ENV, SECRET_ENV])
def test_missing_credentials_variable_is_one_line(
    unset: str, s3_credentials_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(unset)
    bucket = S3Bucket(endpoint="http://127.0.0.1:9", name="never-reached")
    settings = make_settings("sqlite+aiosqlite:///unused.db").model_copy(
        update={"storage": bucket.storage()}
    )
    with pytest.raises(ConfigError) as raised:
        build_app(settings)
    message = str(raised.value)
    assert message.startswith("storage.")
    assert f"environment variable {unset} is not set" in message
    assert "\n" not in message


def test_serve_refuses_missing_credentials(tmp_path: Path) -> None:
    missing = "CHAT_BRIDGE_TEST_NEVER_SET_KEY_ID"
    config = write_toml(
        tmp_path / "bridge.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"},
            "storage": {
                "url": "s3://bucket/prefix",
                "endpoint_url": "http://127.0.0.1:9",
                "access_key_id_env": missing,
            },
        },
    )
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == [
        f"bridge: config error: {config}: storage.access_key_id_env: environment variable"
        f" {missing} is not set (needed because storage.url is set)"
    ]
    assert not (tmp_path / "bridge.db").exists(), "refused before touching the database"
