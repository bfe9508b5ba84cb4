"""One suite for every file store: the local directory and S3 (a real moto server on
loopback), both opened through ``open_file_store`` as the app opens them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.files.factory import open_file_store
from bridge.files.local import LocalFileStore
from bridge.files.s3 import S3FileStore, parse_s3_url
from bridge.files.settings import StorageSettings
from bridge.files.store import FileMissing, FileStore, FileStoreError, content_key
from tests.bridge.files.conftest import SECRET, S3Bucket, new_bucket

MIB = 1024 * 1024
BAD_KEYS = [
    "agents/1/../../etc",
    "agents/1/../../../outside",
    "../outside",
    "/etc/passwd",
    "agents/1/" + "A" * 64,
    "agents/x/" + "a" * 64,
    "agents/1/" + "a" * 63,
    "agents/1/" + "a" * 64 + "/more",
    "agents/1/" + "a" * 64 + "\n",
    "",
]


def key_for(data: bytes, agent_id: int = 1) -> str:
    return content_key(agent_id, hashlib.sha256(data).hexdigest())


@dataclass
class StoreCase:
    """A store and a view of what it really wrote (files on disk, objects in the bucket)."""

    kind: str
    store: FileStore
    stored_names: Callable[[], Awaitable[set[str]]]
    prefix: str

    def name_of(self, key: str) -> str:
        return self.prefix + key


@pytest.fixture(params=["local", "s3"])
async def case(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str, s3_credentials_env: None
) -> AsyncIterator[StoreCase]:
    if request.param == "local":
        root = tmp_path / "files"

        async def on_disk() -> set[str]:
            return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

        store = await open_file_store(StorageSettings(path=str(root)))
        assert isinstance(store, LocalFileStore)
        made = StoreCase(kind="local", store=store, stored_names=on_disk, prefix="")
    else:
        bucket = await new_bucket(s3_endpoint)
        store = await open_file_store(bucket.storage(prefix="deploy/files"))
        assert isinstance(store, S3FileStore)
        made = StoreCase(kind="s3", store=store, stored_names=bucket.names, prefix="deploy/files/")
    try:
        yield made
    finally:
        await made.store.close()


async def test_round_trip(case: StoreCase) -> None:
    small = b"hello, file store"
    large = os.urandom(5 * MIB)
    for data in (small, large, b""):
        await case.store.put(key_for(data), data)
    for data in (small, large, b""):
        assert await case.store.get(key_for(data)) == data
    assert await case.stored_names() == {
        case.name_of(key_for(data)) for data in (small, large, b"")
    }


async def test_put_twice_is_one_object_and_never_changes_it(case: StoreCase) -> None:
    data = b"the same bytes"
    key = key_for(data)
    await case.store.put(key, data)
    await case.store.put(key, data)
    assert await case.stored_names() == {case.name_of(key)}
    # A key names its content: a second put of the key leaves the first bytes alone.
    await case.store.put(key, b"something else")
    assert await case.store.get(key) == data


async def test_missing_key(case: StoreCase) -> None:
    key = key_for(b"never stored")
    with pytest.raises(FileMissing) as raised:
        await case.store.get(key)
    assert raised.value.args == (key,)
    assert await case.store.exists(key) is False


async def test_exists_and_delete(case: StoreCase) -> None:
    kept, dropped = b"kept", b"dropped"
    for data in (kept, dropped):
        await case.store.put(key_for(data), data)
    assert await case.store.exists(key_for(dropped)) is True
    await case.store.delete(key_for(dropped))
    assert await case.store.exists(key_for(dropped)) is False
    with pytest.raises(FileMissing):
        await case.store.get(key_for(dropped))
    await case.store.delete(key_for(dropped))  # again: nothing there, no error
    await case.store.delete(key_for(b"never stored"))
    assert await case.stored_names() == {case.name_of(key_for(kept))}
    assert await case.store.get(key_for(kept)) == kept


async def test_same_bytes_of_two_agents_are_two_objects(case: StoreCase) -> None:
    data = b"shared picture"
    await case.store.put(key_for(data, agent_id=1), data)
    await case.store.put(key_for(data, agent_id=2), data)
    assert await case.stored_names() == {
        case.name_of(key_for(data, agent_id=1)),
        case.name_of(key_for(data, agent_id=2)),
    }
    await case.store.delete(key_for(data, agent_id=1))
    assert await case.store.get(key_for(data, agent_id=2)) == data


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_keys_outside_the_pattern_are_refused(
    case: StoreCase, key: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the store's")
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: case.store.put(key, b"x"),
        lambda: case.store.get(key),
        lambda: case.store.exists(key),
        lambda: case.store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="not a file store key"):
            await operation()
    assert await case.stored_names() == set()
    assert outside.read_bytes() == b"not the store's"


async def test_bad_key_is_refused_before_any_io() -> None:
    # Never opened: any I/O would fail with "used before open()", not with the key check.
    store = S3FileStore(
        bucket="b", prefix="", access_key_id="k", secret_access_key="s", region="us-east-1"
    )
    for key in BAD_KEYS:
        with pytest.raises(ValueError, match="not a file store key"):
            await store.put(key, b"x")
        with pytest.raises(ValueError, match="not a file store key"):
            await store.delete(key)
    with pytest.raises(RuntimeError, match="before open"):
        await store.exists(key_for(b"fine key"))


async def test_concurrent_puts_of_one_key(case: StoreCase) -> None:
    data = os.urandom(MIB)
    key = key_for(data)
    await asyncio.gather(*(case.store.put(key, data) for _ in range(8)))
    assert await case.stored_names() == {case.name_of(key)}  # no leftovers, one object
    assert await case.store.get(key) == data


async def test_s3_prefix_is_respected(s3_bucket: S3Bucket) -> None:
    first = await open_file_store(s3_bucket.storage(prefix="one"))
    second = await open_file_store(s3_bucket.storage(prefix="two/deeper/"))
    try:
        data = b"prefixed"
        key = key_for(data)
        await first.put(key, data)
        assert await s3_bucket.names() == {f"one/{key}"}
        assert await second.exists(key) is False
        with pytest.raises(FileMissing):
            await second.get(key)
        await second.put(key, data)
        await second.delete(key)
        assert await s3_bucket.names() == {f"one/{key}"}
        assert await first.get(key) == data
    finally:
        await first.close()
        await second.close()


async def test_s3_without_prefix_writes_at_the_bucket_root(s3_bucket: S3Bucket) -> None:
    storage = s3_bucket.storage().model_copy(update={"url": f"s3://{s3_bucket.name}"})
    store = await open_file_store(storage)
    try:
        await store.put(key_for(b"root"), b"root")
        assert await s3_bucket.names() == {key_for(b"root")}
    finally:
        await store.close()


async def test_s3_failure_is_one_clear_line_without_secrets(s3_bucket: S3Bucket) -> None:
    gone = s3_bucket.storage().model_copy(update={"url": "s3://no-such-bucket-here/p"})
    store = await open_file_store(gone)
    key = key_for(b"data")
    try:
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.put(key, b"data"),
            lambda: store.get(key),
        ]
        for operation in operations:
            with pytest.raises(FileStoreError) as raised:
                await operation()
            message = str(raised.value)
            assert key in message
            assert "no-such-bucket-here" in message
            assert "NoSuchBucket" in message
            assert SECRET not in message
            assert "\n" not in message
            assert not isinstance(raised.value, FileMissing), "a missing bucket is not a file"
    finally:
        await store.close()


async def test_s3_store_after_close_refuses_use(s3_bucket: S3Bucket) -> None:
    store = await open_file_store(s3_bucket.storage())
    await store.put(key_for(b"x"), b"x")
    await store.close()
    with pytest.raises(RuntimeError, match="after close"):
        await store.get(key_for(b"x"))


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(ValueError):
        parse_s3_url("https://bucket/a")


async def test_s3_credentials_are_never_logged(
    s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = await open_file_store(s3_bucket.storage())
    try:
        await store.put(key_for(b"logged?"), b"logged?")
        assert await store.get(key_for(b"logged?")) == b"logged?"
    finally:
        await store.close()
    opened = [r for r in caplog.records if r.getMessage() == "files.s3_opened"]
    assert [r.fields for r in opened] == [  # type: ignore[attr-defined]
        {"bucket": s3_bucket.name, "prefix": "bridge/files/", "endpoint": s3_bucket.endpoint}
    ]
    for record in caplog.records:
        text = f"{record.getMessage()} {getattr(record, 'fields', '')}"
        assert SECRET not in text
