"""The configured file store: S3 when ``storage.url`` is set, else the local directory."""

from __future__ import annotations

from pathlib import Path

from bridge.files.local import LocalFileStore
from bridge.files.settings import StorageSettings
from bridge.files.store import FileStore


def open_file_store(settings: StorageSettings) -> FileStore:
    if settings.url is not None:
        raise NotImplementedError("the S3 store is not built yet")
    return LocalFileStore(root=Path(settings.path))
