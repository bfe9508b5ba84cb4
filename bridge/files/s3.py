"""The shared file store: an S3-compatible bucket (AWS, MinIO, Ceph, R2, …) for deployments
with several processes or hosts, through one aiobotocore client kept for the store's life."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from bridge.files.store import FileMissing, FileStoreError, check_key
from bridge.infra.logs import log_event
from bridge.infra.redact import redact, redacted_url

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3
MAX_POOL_CONNECTIONS = 20
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")``; no prefix -> ``""``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3FileStore:
    """Objects under ``prefix + key`` in ``bucket``. Call :meth:`open` before use (the
    factory does) and :meth:`close` at the end; credentials are given, never looked up."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        endpoint_url: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None

    def __repr__(self) -> str:
        return f"S3FileStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Create the client. The session reads botocore's model files and the shared AWS
        config from disk, so that happens in a thread, not on the event loop."""
        if self._client is not None:
            return
        session = await asyncio.to_thread(_prepared_session)
        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=MAX_POOL_CONNECTIONS,
            # Most S3-compatible servers want path-style URLs and not every one accepts the
            # newer default checksums; AWS itself keeps botocore's defaults.
            **(_compatible_options() if self._endpoint_url else {}),
        )
        creating = session.create_client(
            "s3",
            region_name=self._region,
            endpoint_url=self._endpoint_url,
            aws_access_key_id=self._access_key_id,
            aws_secret_access_key=self._secret_access_key,
            config=config,
        )
        self._client = await self._stack.enter_async_context(creating)
        log_event(
            logger,
            "files.s3_opened",
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint=redacted_url(self._endpoint_url, keep_path=False)
            if self._endpoint_url
            else None,
        )

    def _object(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _s3(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3FileStore used before open() or after close()")
        return self._client

    async def put(self, key: str, data: bytes) -> None:
        """A key names its content, so an object already there is left alone (no upload);
        two concurrent first puts both write the same bytes, which is just as good."""
        name = self._object(key)
        if await self.exists(key):
            return
        try:
            await self._s3().put_object(Bucket=self.bucket, Key=name, Body=data)
        except (ClientError, BotoCoreError) as error:
            raise self._failure("put", key, error) from None

    async def get(self, key: str) -> bytes:
        name = self._object(key)
        try:
            response = await self._s3().get_object(Bucket=self.bucket, Key=name)
            async with response["Body"] as body:
                return await body.read()
        except ClientError as error:
            if _is_missing(error):
                raise FileMissing(key) from None
            raise self._failure("get", key, error) from None
        except BotoCoreError as error:
            raise self._failure("get", key, error) from None

    async def exists(self, key: str) -> bool:
        name = self._object(key)
        try:
            await self._s3().head_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _is_missing(error):
                return False
            raise self._failure("exists", key, error) from None
        except BotoCoreError as error:
            raise self._failure("exists", key, error) from None
        return True

    async def delete(self, key: str) -> None:
        """S3 answers a delete of a missing key with success, so nothing to special-case."""
        name = self._object(key)
        try:
            await self._s3().delete_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if not _is_missing(error):
                raise self._failure("delete", key, error) from None
        except BotoCoreError as error:
            raise self._failure("delete", key, error) from None

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    def _failure(self, operation: str, key: str, error: Exception) -> FileStoreError:
        """A one-line error naming the operation, the bucket and the key; the reason is
        S3's own text with the credentials (and anything shaped like one) taken out."""
        reason = redact(str(error), (self._access_key_id, self._secret_access_key))
        return FileStoreError(f"S3 {operation} of {key} in bucket {self.bucket}: {reason}")


def _is_missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in MISSING_CODES or (status == 404 and code != "NoSuchBucket")


def _compatible_options() -> dict[str, Any]:
    return {
        "s3": {"addressing_style": "path"},
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }


def _prepared_session() -> AioSession:
    session = get_session()
    session.get_config_variable("ca_bundle")  # reads the shared config files once
    session.warm_up_loader_caches("s3")  # type: ignore[attr-defined]  # newer than the stubs
    return session
