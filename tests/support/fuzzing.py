"""What the fuzz tests of every endpoint share: bounded Hypothesis runs, raw JSON builders, and
the harness around the real app (the store's snapshot, the log records that must not appear,
the endpoint under test and its bridge)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bridge.settings import HttpSettings
from bridge.store.models import ChatMessage, ChatSession, Participant, SessionMember
from tests.support.harness import RunningBridge, make_settings, running_bridge

MIB = 1024 * 1024


def fuzz_settings(examples: int, *, shrink: bool = True) -> Callable[[Any], Any]:
    """Bounded, reproducible runs: the whole file stays well under a minute."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        # One bridge serves every example of a test: the function-scoped fixtures are meant.
        suppress_health_check=list(HealthCheck),
    )


def compact(document: Any) -> bytes:
    # surrogatepass: a lone surrogate becomes bytes that are no UTF-8, as garbage may be.
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return raw.encode("utf-8", "surrogatepass")


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw_json(kind: str, size: int) -> bytes:
    """``size`` levels of nested arrays or objects, or an integer of ``size`` digits."""
    if kind == "[":
        return deep(size)
    if kind == "{":
        return b'{"a":' * size + b"1" + b"}" * size
    return b"9" * size


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


RAW_MARK = re.compile(rb'"@@raw:([\[{9]):([0-9]+)@@"')


async def ten_megabytes() -> AsyncIterator[bytes]:
    chunk = b"x" * 65_536
    for _ in range(10 * MIB // len(chunk)):
        yield chunk


@st.composite
def garbled(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` cut, overwritten, extended or re-encoded at the byte level."""
    how = draw(st.sampled_from(["keep", "cut", "flip", "insert", "bom", "tail", "latin1"]))
    if how == "keep" or not raw:
        return raw
    at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if how == "cut":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if how == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "tail":
        return raw + draw(st.sampled_from([b"\xff", b"\xc3", b"}", b"]", b",", b"\x00", b"x"]))
    return raw.decode("utf-8", "replace").encode("latin-1", errors="replace") + b"\xe9"


# --- the app under test ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the store holds: participants as ``(kind, external id)``, sessions by external id,
    the number of memberships, and user messages as ``(id, external id, content, edited_at,
    deleted_at)``."""

    participants: tuple[tuple[str, str], ...]
    sessions: tuple[str, ...]
    members: int
    user_messages: tuple[tuple[Any, ...], ...]

    def new_messages(self, before: Snapshot) -> list[tuple[Any, ...]]:
        known = {row[0] for row in before.user_messages}
        return [row for row in self.user_messages if row[0] not in known]

    def new_participants(self, before: Snapshot, kind: str) -> set[str]:
        return {p for k, p in self.participants if k == kind} - {
            p for k, p in before.participants if k == kind
        }


async def take_snapshot(bridge: RunningBridge) -> Snapshot:
    async with bridge.sessions() as db:
        participants = await db.execute(
            select(Participant.kind, Participant.external_id).order_by(
                Participant.kind, Participant.external_id
            )
        )
        sessions = await db.scalars(
            select(ChatSession.external_conv_id).order_by(ChatSession.external_conv_id)
        )
        members = await db.scalar(select(func.count()).select_from(SessionMember))
        rows = await db.execute(
            select(
                ChatMessage.id,
                ChatMessage.external_message_id,
                ChatMessage.content,
                ChatMessage.edited_at,
                ChatMessage.deleted_at,
            )
            .where(ChatMessage.role == "user")
            .order_by(ChatMessage.id)
        )
        return Snapshot(
            participants=tuple((str(kind), str(external)) for kind, external in participants),
            sessions=tuple(sessions),
            members=int(members or 0),
            user_messages=tuple(tuple(row) for row in rows.all()),
        )


class LogRecords(logging.Handler):
    """The records a fuzz test must not see; :meth:`wanted` says which (by default every one
    at ``level`` or above)."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._seen = 0

    def wanted(self, record: logging.LogRecord) -> bool:
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted(record):
            self.records.append(record)

    def fresh(self) -> list[logging.LogRecord]:
        """The records since the last call."""
        fresh = self.records[self._seen :]
        self._seen = len(self.records)
        return fresh


@contextmanager
def capturing(
    handler: LogRecords, names: Sequence[str], *, levels: dict[str, int] | None = None
) -> Iterator[LogRecords]:
    """``handler`` on the loggers ``names`` (``levels`` set on some of them) for the block."""
    loggers = [logging.getLogger(name) for name in names]
    saved = {name: logging.getLogger(name).level for name in levels or {}}
    for name, level in (levels or {}).items():
        logging.getLogger(name).setLevel(level)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@dataclass
class FuzzEndpoint:
    """One webhook of the running bridge, the client for it and the records to watch."""

    bridge: RunningBridge
    http: aiohttp.ClientSession
    log: LogRecords
    path: str

    @property
    def url(self) -> str:
        return self.bridge.url + self.path

    async def snapshot(self) -> Snapshot:
        return await take_snapshot(self.bridge)

    async def observe(self, request: Awaitable[int]) -> tuple[Snapshot, int]:
        """The store before ``request`` (a request not yet sent) and the status it got."""
        before = await self.snapshot()
        return before, await request

    async def assert_body_limit(
        self, post: Callable[[bytes], Awaitable[int]], over: bytes, under: bytes, limit: int
    ) -> None:
        """``over`` gets 413 and stores nothing; ``under`` gets through and stores one message."""
        assert len(under) < limit < len(over)
        before = await self.snapshot()
        assert await post(over) == 413
        assert await self.snapshot() == before
        assert await post(under) == 200
        assert len((await self.snapshot()).new_messages(before)) == 1


@asynccontextmanager
async def bridge_for(
    database_url: str, agent: dict[str, Any], *, max_body_bytes: int | None = None
) -> AsyncIterator[tuple[RunningBridge, aiohttp.ClientSession]]:
    """The bridge with one agent, and a client for it; still serving ``/healthz`` at the end."""
    settings = make_settings(database_url, agents=[agent])
    if max_body_bytes is not None:
        http_settings = HttpSettings(port=0, max_body_bytes=max_body_bytes)
        settings = settings.model_copy(update={"http": http_settings})
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        yield bridge, http
        # Still serving after everything it was sent.
        async with http.get(f"{bridge.url}/healthz") as response:
            assert response.status == 200


def parsed(raw: bytes) -> Any:
    """The JSON document ``raw`` holds, as the bridge would read it, or None."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def serialize(document: Any, style: str = "compact") -> bytes:
    """``document`` as JSON with the raw placeholders (``RAW_MARK``) replaced; ``ascii``
    escapes lone surrogates (valid JSON, strings no database can store), ``compact`` and
    ``pretty`` write them as bytes that are no UTF-8."""
    if style == "ascii":
        raw = json.dumps(document).encode()
    elif style == "pretty":
        raw = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        raw = compact(document)
    return RAW_MARK.sub(lambda m: raw_json(m.group(1).decode(), int(m.group(2))), raw)
