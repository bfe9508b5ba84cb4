"""Load for the fault tests: many Slack DMs, sent the way Slack sends them, and the check that
every acknowledged one was answered exactly once.

* :func:`dm_events` builds ``count`` DM events spread over ``conversations`` DM channels (each
  registered in the fake with its user), every text carrying a unique marker that the echo
  agent sends back.
* :class:`LoadSender` pushes them with bounded concurrency to one or more :class:`Endpoint`
  (whose URL may change, or be empty while no bridge listens), redelivering like Slack until a
  2xx comes, within a bounded time; it records which markers were acknowledged.
* :func:`wait_answered` waits until every marker was posted, :func:`assert_exactly_once`
  checks that none is missing or doubled.
* :class:`FaultySlack` is the strict fake plus two fault modes the fault tests need: a share of
  ``chat.postMessage`` calls failing at random (429 or 500), and posts that land but whose
  answer is held back (a process killed then cannot know they landed).

Sizes scale with ``BRIDGE_FAULT_EVENTS`` (``make faults`` runs them big).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from sqlalchemy import func, select

from bridge.settings import DatabaseSettings
from bridge.store.engine import create_engine, session_factory
from bridge.store.models import ChatMessage, ChatSession, MessageState, Participant
from tests.fakes import slack
from tests.fakes.slack import FakeSlack
from tests.support.processes import write_toml

FAULT_EVENTS_ENV = "BRIDGE_FAULT_EVENTS"
POST_METHOD = "chat.postMessage"
WAITING_STATES = (
    MessageState.PENDING,
    MessageState.ANSWERING,
    MessageState.TO_DELIVER,
    MessageState.DELIVERING,
)


def fault_events(default: int) -> int:
    """How many events a fault test sends: ``BRIDGE_FAULT_EVENTS`` if set, else ``default``."""
    raw = os.environ.get(FAULT_EVENTS_ENV, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{FAULT_EVENTS_ENV} must be a positive number, not {raw!r}")
    return value


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadEvent:
    """One DM event; the echo agent answers with its text, which carries ``marker``."""

    marker: str
    channel: str
    user: str
    ts: str
    body: dict[str, Any]


def _marker_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(tag)}-\d{{6}}\b")


def dm_events(fake: FakeSlack, *, count: int, conversations: int, tag: str) -> list[LoadEvent]:
    """``count`` DM events, round-robin over ``conversations`` DM channels registered in
    ``fake`` (with their users, so name look-ups succeed); every ts and marker unique."""
    if not 1 <= conversations <= 9999:
        raise ValueError("between 1 and 9999 conversations")
    channels: list[tuple[str, str]] = []
    for index in range(conversations):
        channel, user = f"D0LOAD{index:04d}", f"U0LOAD{index:04d}"
        fake.add_user(user, f"load{index}", f"Load user {index}")
        fake.add_channel(channel, is_im=True, user=user)
        channels.append((channel, user))
    events: list[LoadEvent] = []
    for number in range(count):
        channel, user = channels[number % conversations]
        marker = f"{tag}-{number:06d}"
        ts = slack.new_ts()
        body = slack.message(channel=channel, user=user, text=f"load {marker}", ts=ts)
        events.append(LoadEvent(marker=marker, channel=channel, user=user, ts=ts, body=body))
    return events


def new_tag() -> str:
    """A marker prefix unique to one test run."""
    return f"mk{secrets.token_hex(3)}"


# --- sending -------------------------------------------------------------------------------


@dataclass(slots=True)
class Endpoint:
    """Where a bridge takes Slack events; ``url`` is empty while none listens (it is read
    before every attempt, so a restarted bridge on a new port is found)."""

    url: str = ""


@dataclass(slots=True)
class SendReport:
    """What the sender saw. A marker is acknowledged once any copy of its event got a 2xx."""

    acknowledged: set[str] = field(default_factory=set)
    abandoned: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer at all

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def no_answer(self) -> int:
        return self.statuses[0]


class LoadSender:
    """Sends events with at most ``concurrency`` in flight, each to every endpoint ``route``
    names for it (concurrently), redelivering like Slack until a 2xx or ``give_up_after``."""

    def __init__(
        self,
        fake: FakeSlack,
        events: Sequence[LoadEvent],
        *,
        route: Callable[[int, LoadEvent], Sequence[Endpoint]],
        concurrency: int = 16,
        request_deadline: float = 5.0,
        retry_delay: float = 0.2,
        give_up_after: float = 60.0,
        rate: float | None = None,
    ) -> None:
        self._fake = fake
        self._events = events
        self._route = route
        self._concurrency = concurrency
        self._request_deadline = request_deadline
        self._retry_delay = retry_delay
        self._give_up_after = give_up_after
        self._rate = rate
        self.report = SendReport()
        self._progress = asyncio.Event()

    async def run(self) -> SendReport:
        """Send everything; with ``rate``, event ``i`` is not sent before ``i / rate`` seconds,
        so the load lasts long enough for a fault to strike in its middle."""
        queue: asyncio.Queue[tuple[int, LoadEvent]] = asyncio.Queue()
        for item in enumerate(self._events):
            queue.put_nowait(item)
        started = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._concurrency, len(self._events))):
                group.create_task(self._worker(queue, started))
        return self.report

    async def wait_acknowledged(self, count: int, *, within: float) -> None:
        """Until ``count`` markers were acknowledged (or every event is settled)."""
        async with asyncio.timeout(within):
            while len(self.report.acknowledged) < count and len(self.report.acknowledged) + len(
                self.report.abandoned
            ) < len(self._events):
                self._progress.clear()
                await self._progress.wait()

    async def _worker(self, queue: asyncio.Queue[tuple[int, LoadEvent]], started: float) -> None:
        loop = asyncio.get_running_loop()
        while not queue.empty():
            index, event = queue.get_nowait()
            if self._rate:
                await asyncio.sleep(max(0.0, started + index / self._rate - loop.time()))
            endpoints = self._route(index, event)
            outcomes = await asyncio.gather(
                *(self._deliver(event, endpoint) for endpoint in endpoints)
            )
            if not any(outcomes):
                self.report.abandoned.add(event.marker)
                self._progress.set()

    async def _deliver(self, event: LoadEvent, endpoint: Endpoint) -> bool:
        """Slack's redelivery, made patient enough to bridge an outage of a few seconds."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._give_up_after
        while True:
            url = endpoint.url
            if url:
                results = await self._fake.deliver(
                    url, event.body, deadline=self._request_deadline, max_retries=2
                )
                for result in results:
                    self.report.statuses[result.status] += 1
                last = results[-1]
                if last.ok:
                    self.report.acknowledged.add(event.marker)
                    self._progress.set()
                    return True
                if last.headers.get("X-Slack-No-Retry") == "1":
                    return False
            if loop.time() >= give_up_at:
                return False
            await asyncio.sleep(self._retry_delay)


def route_to(endpoint: Endpoint) -> Callable[[int, LoadEvent], Sequence[Endpoint]]:
    """Every event to one endpoint."""
    return lambda _index, _event: (endpoint,)


# --- what was posted -----------------------------------------------------------------------


def posts_per_marker(fake: FakeSlack, tag: str) -> Counter[str]:
    """How many stored ``chat.postMessage`` posts carry each marker."""
    pattern = _marker_pattern(tag)
    counts: Counter[str] = Counter()
    for post in fake.posts:
        counts.update(pattern.findall(str(post.get("text") or "")))
    return counts


async def wait_answered(
    fake: FakeSlack, markers: Collection[str], *, tag: str, within: float
) -> Counter[str]:
    """Wait until every marker was posted at least once; the counts per marker."""
    wanted = set(markers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        counts = posts_per_marker(fake, tag)
        missing = wanted - set(counts)
        if not missing:
            return counts
        if loop.time() >= deadline:
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} markers never answered within {within:g} s, "
                f"e.g. {sorted(missing)[:5]}"
            )
        await asyncio.sleep(0.1)


def assert_exactly_once(
    fake: FakeSlack, events: Iterable[LoadEvent], report: SendReport, *, tag: str
) -> Counter[str]:
    """Every acknowledged event answered exactly once, in its own DM; nothing posted twice,
    nothing posted for an event never sent. Returns the counts per marker."""
    by_marker = {event.marker: event for event in events}
    counts = posts_per_marker(fake, tag)
    doubled = sorted(marker for marker, n in counts.items() if n > 1)
    missing = sorted(report.acknowledged - set(counts))
    unknown = sorted(set(counts) - set(by_marker))
    assert not doubled, f"{len(doubled)} markers posted more than once, e.g. {doubled[:5]}"
    assert not missing, f"{len(missing)} acknowledged markers never answered, e.g. {missing[:5]}"
    assert not unknown, f"posts for markers never sent: {unknown[:5]}"
    pattern = _marker_pattern(tag)
    for post in fake.posts:
        for marker in pattern.findall(str(post.get("text") or "")):
            expected = by_marker[marker].channel
            assert post["channel"] == expected, f"{marker} posted in {post['channel']}"
            assert post.get("thread_ts") is None, f"{marker}: a DM reply is not threaded"
    return counts


# --- the database --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseCounts:
    sessions: int
    users: int
    user_messages: int
    replies: int
    waiting: int
    by_state: dict[str, int]


async def database_counts(database_url: str) -> DatabaseCounts:
    """What the bridge stored, from a connection of the test's own."""
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=1))
    try:
        async with session_factory(engine)() as db:
            sessions = (await db.execute(select(func.count()).select_from(ChatSession))).scalar()
            users = (
                await db.execute(
                    select(func.count()).select_from(Participant).where(Participant.kind == "user")
                )
            ).scalar()
            rows = (
                await db.execute(
                    select(ChatMessage.role, ChatMessage.state, func.count()).group_by(
                        ChatMessage.role, ChatMessage.state
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    by_role: Counter[str] = Counter()
    by_state: Counter[str] = Counter()
    for role, state, count in rows:
        by_role[str(role)] += int(count)
        by_state[str(state)] += int(count)
    return DatabaseCounts(
        sessions=int(sessions or 0),
        users=int(users or 0),
        user_messages=by_role["user"],
        replies=by_role["assistant"] + by_role["system"],
        waiting=sum(by_state[state] for state in WAITING_STATES),
        by_state=dict(by_state),
    )


async def wait_idle(database_url: str, *, within: float) -> DatabaseCounts:
    """Until no message waits for an answer or a delivery (retries included)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        counts = await database_counts(database_url)
        if counts.waiting == 0:
            return counts
        if loop.time() >= deadline:
            raise AssertionError(f"work still waiting after {within:g} s: {counts.by_state}")
        await asyncio.sleep(0.2)


# --- a fake Slack with more faults ---------------------------------------------------------


class FaultySlack(FakeSlack):
    """The strict fake, plus faults that strike a share of ``chat.postMessage`` calls at
    random, and posts that land but whose answer is held back until released."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.post_fault_ratio = 0.0
        self.retry_after = 1
        self.injected: Counter[str] = Counter()
        self.held_posts: list[dict[str, Any]] = []
        self._random = random.Random(kwargs.get("bot_token"))
        self._released = asyncio.Event()
        self._released.set()

    def hold_post_answers(self) -> None:
        """From now on posts land in the channel but are answered only after release."""
        self._released.clear()

    def release_post_answers(self) -> None:
        self._released.set()

    async def stop(self) -> None:
        self.release_post_answers()
        await super().stop()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        is_post = request.match_info.get("method") == POST_METHOD
        if is_post and self.post_fault_ratio and self._random.random() < self.post_fault_ratio:
            # Queued for the next post the base class serves: the share is what counts.
            if self._random.random() < 0.5:
                self.rate_limit_next(1, retry_after=self.retry_after)
                self.injected["429"] += 1
            else:
                self.fail_next(1, status=500)
                self.injected["500"] += 1
        response = await super()._api(request)
        if is_post and not self._released.is_set() and response.status == 200:
            answer = json.loads(cast(web.Response, response).text or "{}")
            if answer.get("ok"):
                self.held_posts.append(answer["message"])
            await self._released.wait()
        return response


def slack_bridge_config(
    path: Path, *, database_url: str, fake: FakeSlack, agent: str, **pipeline: Any
) -> Path:
    """One Slack agent (echo backend) against ``fake``; fast polls and retries, and claims
    that expire after two seconds, so a process that takes a dead one's place on PostgreSQL
    has its work over quickly (SQLite releases every claim at start)."""
    return write_toml(
        path,
        {
            "database": {"url": database_url},
            "pipeline": {
                "poll_interval_seconds": 0.5,
                "retry_base_seconds": 0.1,
                "retry_max_seconds": 2.0,
                "claim_ttl_seconds": 2.0,
                "shutdown_grace_seconds": 5.0,
                **pipeline,
            },
            "agents": [
                {
                    "slug": agent,
                    "slack": {
                        "bot_token": fake.bot_token,
                        "signing_secret": fake.signing_secret,
                        "api_base_url": fake.api_url,
                    },
                }
            ],
        },
    )
