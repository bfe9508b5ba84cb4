"""The file store: where attachment contents live, behind one small interface.

Keys are made by the bridge only (:func:`content_key`), never from a name that came from
outside, so no key can reach outside the store. Contents are stored once per content hash per
agent: the same bytes sent twice are one object.
"""

from __future__ import annotations

import re
from typing import Protocol

KEY_PATTERN = re.compile(r"^agents/[0-9]{1,19}/[0-9a-f]{64}$")


class FileMissing(LookupError):
    """No object under that key."""


class FileStoreError(RuntimeError):
    """The store failed for another reason (access denied, unreachable, no bucket): one line
    naming the operation and the key, with no secret in it."""


def content_key(agent_id: int, sha256: str) -> str:
    key = f"agents/{agent_id}/{sha256}"
    check_key(key)
    return key


def check_key(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):  # not match: "$" would let a trailing newline in
        raise ValueError(f"not a file store key: {key!r}")


class FileStore(Protocol):
    """Implementations: :class:`bridge.files.local.LocalFileStore`, the S3 store."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; the same key always holds the same bytes, so a put
        of a key that exists changes nothing. Atomic: a reader sees all of it or nothing."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`FileMissing` when there are none."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens when it is not there."""
        ...

    async def close(self) -> None: ...
