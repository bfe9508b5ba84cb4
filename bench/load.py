"""The load generator: signed Slack DM events in, replies counted at the fake Slack Web API.

Every event carries a unique marker as its text; the echo agent (and the baseline) sends it
back, so each reply is matched to its event and timed from the moment the event was sent.
Every wait for replies is capped, so a slow service makes a figure "incomplete", never the
bench hang.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.procstat import cpu_seconds
from tests.fakes import slack
from tests.fakes.slack import FakeSlack

# One sequence for the whole run: replies are matched by marker across every load generator.
MARKERS = itertools.count()


class TimedSlack(FakeSlack):
    """The strict fake Slack, also noting when each reply (by its text) arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: dict[str, float] = {}
        self._awaited: set[str] = set()
        self._all_arrived = asyncio.Event()

    def expect(self, markers: Collection[str]) -> None:
        self._awaited = {marker for marker in markers if marker not in self.arrivals}
        self._all_arrived.clear()
        if not self._awaited:
            self._all_arrived.set()

    async def wait_expected(self, *, within: float) -> bool:
        """True once every expected marker arrived; False when ``within`` seconds ran out."""
        try:
            async with asyncio.timeout(max(within, 0.0)):
                await self._all_arrived.wait()
        except TimeoutError:
            return False
        return True

    def forget(self) -> None:
        """Drop the fake's records (calls, posts, pushes, channel histories) between runs: a
        long bench keeps tens of thousands of them otherwise. Arrivals stay."""
        self.calls.clear()
        self.posts.clear()
        self.pushes.clear()
        self._post_queue = asyncio.Queue()
        self._history.clear()

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_post_message(params)
        marker = str(params.get("text"))
        self.arrivals.setdefault(marker, time.perf_counter())
        if self._awaited:
            self._awaited.discard(marker)
            if not self._awaited:
                self._all_arrived.set()
        return result


@dataclass
class Timings:
    acks: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    failures: int = 0
    unanswered: int = 0
    last_ack_at: float = 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Burst:
    """What one burst did: when it started, when the last ack came, when each reply came."""

    messages: int
    started: float
    last_ack_at: float
    ended: float
    arrivals: list[float]
    timings: Timings
    cpu_seconds: float | None

    @property
    def complete(self) -> bool:
        return len(self.arrivals) == self.messages

    def figures(self) -> dict[str, Any]:
        """The burst's figures; rates count replies at the fake in each phase.

        Throughput is answered messages from the first POST to the last reply (to the cap,
        when the burst is incomplete). The answer rate after ingest is left out (None) when
        fewer than 20 replies or 0.5 s remained after the last ack: nothing was left to answer.
        """
        answered = len(self.arrivals)
        ingest = max(self.last_ack_at - self.started, 1e-9)
        end = max(self.arrivals) if self.complete and self.arrivals else self.ended
        during = sum(1 for at in self.arrivals if at <= self.last_ack_at)
        after_seconds = end - self.last_ack_at
        after = answered - during
        after_rate = after / after_seconds if after >= 20 and after_seconds >= 0.5 else None
        during_rate = during / ingest
        cpu = self.cpu_seconds
        return {
            "messages": self.messages,
            "answered": answered,
            "complete": self.complete,
            "failures": self.timings.failures,
            "seconds": end - self.started,
            "ingest_seconds": ingest,
            "throughput": answered / max(end - self.started, 1e-9),
            "ingest_rate": len(self.timings.acks) / ingest,
            "ack_p50_ms": percentile(self.timings.acks, 0.50) * 1000,
            "ack_p99_ms": percentile(self.timings.acks, 0.99) * 1000,
            "answer_rate_during": during_rate,
            "answer_rate_after": after_rate,
            "answer_during_over_after": during_rate / after_rate if after_rate else None,
            "cpu_seconds": cpu,
            "cpu_ms_per_message": cpu / answered * 1000 if cpu is not None and answered else None,
        }


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
        acked = time.perf_counter()
        timings.acks.append(acked - started)
        timings.last_ack_at = max(timings.last_ack_at, acked)
        return started

    async def burst(
        self,
        *,
        messages: int,
        conversations: int,
        concurrency: int,
        within: float,
        offset: int = 0,
        cpu_of: int | None = None,
    ) -> Burst:
        """``concurrency`` clients post ``messages`` events as fast as each gets its ack (none
        waits for replies), then the replies are awaited until ``within`` seconds after the
        first POST. ``cpu_of``: a process whose CPU time over the burst is measured."""
        timings = Timings()
        events = [self._event(offset + n % conversations) for n in range(messages)]
        markers = [marker for marker, _ in events]
        self._fake.expect(markers)
        queue = iter(enumerate(events))
        cpu_before = cpu_seconds(cpu_of) if cpu_of is not None else None
        started = time.perf_counter()

        async def client() -> None:
            for index, (_marker, body) in queue:
                await self._send(body, self._urls[index % len(self._urls)], timings)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        await self._fake.wait_expected(within=started + within - time.perf_counter())
        ended = time.perf_counter()
        cpu = (
            cpu_seconds(cpu_of) - cpu_before
            if cpu_of is not None and cpu_before is not None
            else None
        )
        arrivals = [self._fake.arrivals[m] for m in markers if m in self._fake.arrivals]
        return Burst(
            messages=messages,
            started=started,
            last_ack_at=timings.last_ack_at or ended,
            ended=ended,
            arrivals=arrivals,
            timings=timings,
            cpu_seconds=cpu,
        )

    async def open_loop(
        self, *, rate: float, seconds: float, conversations: int, offset: int = 0
    ) -> Timings:
        """Offer ``rate`` events per second for ``seconds``, whatever the answers; ack and
        end-to-end latency of each (replies awaited for at most a minute)."""
        timings = Timings()
        count = max(1, int(rate * seconds))
        events = [self._event(offset + n % conversations) for n in range(count)]
        self._fake.expect([marker for marker, _ in events])
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
        await self._fake.wait_expected(within=60)
        arrivals = self._fake.arrivals
        timings.ends = [arrivals[m] - sent_at[m] for m, _ in events if m in arrivals]
        timings.unanswered = count - len(timings.ends)
        return timings

    async def one_by_one(self, *, messages: int, conversation: int) -> list[float]:
        """End-to-end latency of messages sent one at a time into one conversation."""
        latencies = []
        for _ in range(messages):
            marker, body = self._event(conversation)
            self._fake.expect([marker])
            started = time.perf_counter()
            await self._fake.push_event(self._urls[0], body, deadline=30)
            if not await self._fake.wait_expected(within=30):
                raise TimeoutError(f"no reply to a single message within 30 s ({marker})")
            latencies.append(self._fake.arrivals[marker] - started)
        return latencies
