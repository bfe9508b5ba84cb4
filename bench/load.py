"""The load generator: signed Slack DM events in, replies counted at the fake Slack Web API.

Every event carries a unique marker as its text; the echo agent sends it back, so each reply
is matched to its event and timed from the moment the event was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import slack
from tests.fakes.slack import FakeSlack

# One sequence for the whole run: replies are matched by marker across every load generator.
MARKERS = itertools.count()


class TimedSlack(FakeSlack):
    """The strict fake Slack, also noting when each reply (by its text) arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: dict[str, float] = {}
        self._target = 0
        self._reached = asyncio.Event()

    def expect(self, count: int) -> None:
        self._target = count
        self._reached.clear()
        if len(self.arrivals) >= count:
            self._reached.set()

    async def wait_expected(self, *, within: float) -> None:
        async with asyncio.timeout(within):
            await self._reached.wait()

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_post_message(params)
        self.arrivals.setdefault(str(params.get("text")), time.perf_counter())
        if len(self.arrivals) >= self._target:
            self._reached.set()
        return result


@dataclass
class Timings:
    acks: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    failures: int = 0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LoadGenerator:
    def __init__(self, *, fake: TimedSlack, urls: Sequence[str]) -> None:
        self._fake = fake
        self._urls = list(urls)
        self._users: set[str] = set()

    def _event(self, conversation: int) -> tuple[str, dict[str, Any]]:
        marker = f"m{next(MARKERS)}"
        user = f"U{conversation:09d}"
        if user not in self._users:
            self._fake.add_user(user, f"user{conversation}", f"User {conversation}")
            self._users.add(user)
        body = slack.message(channel=f"D{conversation:09d}", user=user, text=marker)
        return marker, body

    async def _send(self, body: dict[str, Any], url: str, timings: Timings) -> float:
        started = time.perf_counter()
        try:
            result = await self._fake.push_event(url, body, deadline=30)
        except Exception:
            timings.failures += 1
            return started
        if result.status != 200:
            timings.failures += 1
        timings.acks.append(time.perf_counter() - started)
        return started

    async def closed_loop(
        self, *, messages: int, conversations: int, concurrency: int, within: float = 600
    ) -> tuple[float, Timings]:
        """Send ``messages`` events as fast as ``concurrency`` allows; messages per second from
        the first POST to the last reply."""
        timings = Timings()
        events = [self._event(n % conversations) for n in range(messages)]
        target = len(self._fake.arrivals) + messages
        self._fake.expect(target)
        queue = iter(enumerate(events))
        started = time.perf_counter()

        async def worker() -> None:
            for index, (_marker, body) in queue:
                await self._send(body, self._urls[index % len(self._urls)], timings)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self._fake.wait_expected(within=within)
        last = max(self._fake.arrivals[m] for m, _ in events)
        return messages / (last - started), timings

    async def open_loop(
        self, *, rate: float, seconds: float, conversations: int, offset: int = 0
    ) -> Timings:
        """Offer ``rate`` events per second for ``seconds``, whatever the answers; ack and
        end-to-end latency of each."""
        timings = Timings()
        count = max(1, int(rate * seconds))
        events = [self._event(offset + n % conversations) for n in range(count)]
        self._fake.expect(len(self._fake.arrivals) + count)
        sent_at: dict[str, float] = {}
        tasks: list[asyncio.Task[None]] = []
        begin = time.perf_counter()

        async def one(marker: str, body: dict[str, Any]) -> None:
            sent_at[marker] = await self._send(body, self._urls[0], timings)

        for index, (marker, body) in enumerate(events):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(marker, body)))
        await asyncio.gather(*tasks)
        await self._fake.wait_expected(within=120)
        timings.ends = [self._fake.arrivals[m] - sent_at[m] for m, _ in events]
        return timings

    async def one_by_one(self, *, messages: int, conversation: int) -> list[float]:
        """End-to-end latency of messages sent one at a time into one conversation."""
        latencies = []
        for _ in range(messages):
            marker, body = self._event(conversation)
            self._fake.expect(len(self._fake.arrivals) + 1)
            started = time.perf_counter()
            await self._fake.push_event(self._urls[0], body, deadline=30)
            await self._fake.wait_expected(within=30)
            latencies.append(self._fake.arrivals[marker] - started)
        return latencies
