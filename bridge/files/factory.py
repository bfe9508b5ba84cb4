"""The configured file store: S3 when ``storage.url`` is set, else the local directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from bridge.files.local import LocalFileStore
from bridge.files.s3 import S3FileStore, parse_s3_url
from bridge.files.settings import StorageSettings
from bridge.files.store import FileStore
from bridge.settings import ConfigError


def s3_credentials(
    settings: StorageSettings, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The access key id and secret from the environment variables the settings name.
    Both are required when ``storage.url`` is set: a missing one is a :class:`ConfigError`
    naming the variable (never its value), before anything starts."""
    env = os.environ if environ is None else environ
    values = []
    for setting in ("access_key_id_env", "secret_access_key_env"):
        variable = getattr(settings, setting)
        value = env.get(variable, "")
        if not value:
            raise ConfigError(
                f"storage.{setting}: environment variable {variable} is not set"
                " (needed because storage.url is set)"
            )
        values.append(value)
    return values[0], values[1]


def check_storage(settings: StorageSettings) -> None:
    """Fail fast on what would only fail when the store opens (called by ``build_app``)."""
    if settings.url is not None:
        s3_credentials(settings)


async def open_file_store(settings: StorageSettings) -> FileStore:
    """The store, ready to use; the caller closes it."""
    if settings.url is None:
        return LocalFileStore(root=Path(settings.path))
    access_key_id, secret_access_key = s3_credentials(settings)
    bucket, prefix = parse_s3_url(settings.url)
    store = S3FileStore(
        bucket=bucket,
        prefix=prefix,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
    )
    await store.open()
    return store
