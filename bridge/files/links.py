"""Signed download links: how a webhook agent fetches the files of the message it answers
without holding an API token.

A link is ``<public url>/api/v1/files/{id}/signed?expires=<unix seconds>&sig=<hex>`` where
``sig`` is HMAC-SHA256 over ``"{id}.{expires}"`` with the bridge's own key. The key is made
at random by the first process that starts and kept in ``service_secrets`` (name
``file_links``), so every process signs and checks with the same key, and a link survives a
restart until it expires. The file id is inside the MAC: a signature made for one file opens
no other, and neither the id nor the expiry can be changed without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.settings import HttpSettings
from bridge.store.engine import dialect_of, insert
from bridge.store.models import SECRETS, utcnow

LINK_KEY_NAME = "file_links"
SIGNED_PATH = re.compile(r"/api/v1/files/[0-9]{1,19}/signed")
"""The one path the API serves without a bearer token (the signature is the credential)."""
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})

LinkCheck = Literal["ok", "expired", "invalid"]


def is_signed_file_path(path: str) -> bool:
    return SIGNED_PATH.fullmatch(path) is not None


def public_base_url(http: HttpSettings) -> str:
    """Where agents reach this bridge: ``http.public_url`` when set, else the listening
    address (loopback when it listens on every address)."""
    if http.public_url:
        return http.public_url.rstrip("/")
    host = "127.0.0.1" if http.host in _ANY_ADDRESS else http.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{http.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileLinks:
    """Makes and checks signed links; one per app, the key loaded once at start."""

    key: bytes
    base_url: str
    ttl_seconds: float

    def signature(self, file_id: int, expires: int) -> str:
        return hmac.new(self.key, f"{file_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def path(self, file_id: int, *, expires: int) -> str:
        """The link's path and query (for any expiry: tests craft expired ones)."""
        query = urlencode({"expires": expires, "sig": self.signature(file_id, expires)})
        return f"/api/v1/files/{file_id}/signed?{query}"

    def url(self, file_id: int, *, now: float | None = None) -> str:
        """An absolute link valid for ``ttl_seconds`` from now."""
        expires = int((time.time() if now is None else now) + self.ttl_seconds) + 1
        return self.base_url + self.path(file_id, expires=expires)

    def check(self, file_id: int, *, expires: str, sig: str, now: float | None = None) -> LinkCheck:
        """``invalid`` unless the signature is this bridge's for exactly this file and expiry
        (compared in constant time); then ``expired`` once the expiry has passed."""
        if not (_EXPIRES.fullmatch(expires) and _SIGNATURE.fullmatch(sig)):
            return "invalid"
        expected = self.signature(file_id, int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            return "invalid"
        if int(expires) <= (time.time() if now is None else now):
            return "expired"
        return "ok"


async def load_link_key(sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The shared key: inserted at random unless a process made it already, then read, so
    every process on the database ends up with the same one."""
    async with sessions() as db, db.begin():
        await db.execute(
            insert(dialect_of(db), SECRETS)
            .values(name=LINK_KEY_NAME, value=secrets.token_hex(32), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = (
            await db.execute(select(SECRETS.c.value).where(SECRETS.c.name == LINK_KEY_NAME))
        ).scalar_one()
    return str(value).encode()
