"""A real S3-compatible server for the file store tests: moto in server mode on loopback,
started once per session; each test gets a bucket of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer
from types_aiobotocore_s3.client import S3Client

from bridge.files.settings import StorageSettings

KEY_ID_ENV = "CHAT_BRIDGE_TEST_S3_KEY_ID"
SECRET_ENV = "CHAT_BRIDGE_TEST_S3_SECRET"
KEY_ID = "AKIATESTKEYID0000001"
SECRET = "test-secret-Zq8vXw2LmN4pR6tY9uB1cD3eF5gH7jK0"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@asynccontextmanager
async def s3_admin(endpoint: str) -> AsyncIterator[S3Client]:
    """A client of the test's own, to create buckets and look at what the store wrote."""
    async with get_session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    ) as client:
        yield client


async def object_names(endpoint: str, bucket: str) -> set[str]:
    """Every object in the bucket, whatever its prefix."""
    async with s3_admin(endpoint) as client:
        listed = await client.list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listed.get("Contents", [])}


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    name: str

    def storage(self, prefix: str = "bridge/files") -> StorageSettings:
        return StorageSettings(
            url=f"s3://{self.name}/{prefix}",
            endpoint_url=self.endpoint,
            region=REGION,
            access_key_id_env=KEY_ID_ENV,
            secret_access_key_env=SECRET_ENV,
        )

    async def names(self) -> set[str]:
        return await object_names(self.endpoint, self.name)


@pytest.fixture
def s3_credentials_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ID_ENV, KEY_ID)
    monkeypatch.setenv(SECRET_ENV, SECRET)


async def new_bucket(endpoint: str) -> S3Bucket:
    name = f"bridge-{uuid.uuid4().hex[:12]}"
    async with s3_admin(endpoint) as client:
        await client.create_bucket(Bucket=name)
    return S3Bucket(endpoint=endpoint, name=name)


@pytest.fixture
async def s3_bucket(s3_endpoint: str, s3_credentials_env: None) -> S3Bucket:
    return await new_bucket(s3_endpoint)
