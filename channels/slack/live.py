"""A Slack reply shown while it is written (:class:`bridge.ports.live.LiveReply`).

``native`` (the default) streams each part with Slack's own AI streaming: ``chat.startStream``
in the thread of the message answered (a top-level message's own ts: streams live in threads),
then ``chat.appendStream`` with only the new text. A stream cannot be rewritten: when the text
so far no longer extends what was streamed (the split moved a paragraph to the next part), the
part takes no more text and the final delivery's ``chat.update`` puts it right. A part that
reaches the limit is stopped and the next part starts its own stream, so part i of the live
view is part i of the final reply. ``update`` posts each part (with its delivery key, as a
final post has) and edits it as it grows; ``off`` shows nothing while the agent writes.

After a crash the parts already started are continued by edits: a stream of unknown content is
stopped, never appended to. Status (best effort, never failing the reply): 👀 on the message
answered and the assistant thread status "is thinking…".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from bridge.infra.logs import log_event
from bridge.ports.errors import DeliveryError
from bridge.ports.live import Draft
from channels.slack.calls import SlackCalls, StreamRefused
from channels.slack.outbound import reply_parts
from channels.slack.settings import Streaming

logger = logging.getLogger(__name__)

APPEND_INTERVAL_SECONDS = 1.0
"""Between two calls that only append or edit: ``chat.appendStream`` is Tier 4 (100/min), so
one reply uses 60 of them a minute and a second reply streaming at once still fits."""
STREAM_INTERVAL_SECONDS = 3.0
"""After a call that stopped a part's stream (and started the next): ``chat.startStream`` and
``chat.stopStream`` are Tier 2 (20/min); one every 3 s keeps a long reply within them. The
first start of a reply is followed by appends, paced as those."""
UPDATE_INTERVAL_SECONDS = 1.2
"""``update`` mode edits with ``chat.update``, Tier 3 (50/min): one every 1.2 s."""

ON_IT = "eyes"
ANSWERED = "white_check_mark"
FAILED = "x"
THINKING = "is thinking…"


def live_thread(reply_target: Mapping[str, str], streaming: Streaming) -> str | None:
    """Where the live reply's messages go: a native stream needs a thread, so a top-level
    message gets its answer in its own thread; other modes answer where the reply goes."""
    thread = reply_target.get("thread_ts") or None
    if streaming == "native":
        return thread or reply_target.get("message_ts") or None
    return thread


class SlackLive:
    """One reply as it is written; :meth:`show` takes the whole text so far."""

    def __init__(self, *, calls: SlackCalls, draft: Draft, streaming: Streaming, team: str) -> None:
        self._calls = calls
        self._draft = draft
        target = draft.reply_target
        self._channel = target.get("channel", "")
        self._thread = live_thread(target, streaming)
        self._user = target.get("user") or ""
        self._team = team
        self._mode: Streaming = streaming
        if streaming == "native" and not (self._thread and self._user and team):
            self._mode = "update"  # nothing to stream into (or for): edit instead
        self._ids = list(draft.started)
        self._shown: list[str | None] = [None] * len(self._ids)
        """What each part shows (None: not known, or a stream that takes no more text)."""
        self._open = False
        """The last part is a stream this process started and has not stopped."""
        self._resumed = bool(draft.started) and self._mode == "native"
        self._base = UPDATE_INTERVAL_SECONDS if self._mode == "update" else APPEND_INTERVAL_SECONDS
        self.interval_seconds = self._base

    async def show(self, text: str) -> Sequence[str]:
        if self._mode == "off":
            return tuple(self._ids)
        parts = reply_parts(text)
        before = len(self._ids)
        self.interval_seconds = self._base
        try:
            if self._resumed:
                await self._resume()
            if self._mode == "native":
                await self._stream(parts)
            else:
                await self._edit(parts)
        except DeliveryError as error:
            if len(self._ids) == before:
                raise
            # A message started in this call must be recorded: report it, wait out the rest.
            self.interval_seconds = max(self._base, error.retry_after or STREAM_INTERVAL_SECONDS)
        return tuple(self._ids)

    async def close(self) -> None:
        """Nothing runs while the agent writes: a stream stays open until the final
        delivery stops it with the exact text."""
        return None

    async def _resume(self) -> None:
        """An earlier process started these parts: what the last one streamed is unknown, so
        stop it, and continue by edits."""
        await self._calls.stop_stream(channel=self._channel, ts=self._ids[-1])
        self._resumed = False
        self._mode = "update"
        self._base = UPDATE_INTERVAL_SECONDS

    async def _stream(self, parts: list[str]) -> None:
        last = len(self._ids) - 1
        if self._open and last < len(parts):
            part, shown = parts[last], self._shown[last]
            extends = shown is not None and part.startswith(shown)
            if last < len(parts) - 1:
                # The part is complete: stream the rest of it as it stops.
                rest = part[len(shown) :] if extends and shown is not None else ""
                await self._calls.stop_stream(channel=self._channel, ts=self._ids[last], text=rest)
                self._open = False
                self._shown[last] = part if extends else None
                self.interval_seconds = STREAM_INTERVAL_SECONDS
            elif not extends:
                self._shown[last] = None
            elif shown is not None and len(part) > len(shown):
                appended = await self._calls.append_stream(
                    channel=self._channel, ts=self._ids[last], text=part[len(shown) :]
                )
                self._shown[last] = part if appended else None
        for index in range(len(self._ids), len(parts)):
            if self._open:
                await self._calls.stop_stream(channel=self._channel, ts=self._ids[-1])
                self._open = False
            assert self._thread is not None
            try:
                ts = await self._calls.start_stream(
                    channel=self._channel,
                    thread_ts=self._thread,
                    team=self._team,
                    user=self._user,
                    text=parts[index],
                )
            except StreamRefused as refused:
                log_event(
                    logger,
                    "slack.stream_refused",
                    level=logging.WARNING,
                    agent=self._draft.agent_slug,
                    error=refused.code,
                )
                self._mode = "update"
                self._base = UPDATE_INTERVAL_SECONDS
                await self._edit(parts)
                return
            self._ids.append(ts)
            self._shown.append(parts[index])
            self._open = True
            # The next call appends (Tier 4); only a part that follows a stopped one paces
            # for the Tier 2 start and stop it cost.
            if index > 0:
                self.interval_seconds = STREAM_INTERVAL_SECONDS

    async def _edit(self, parts: list[str]) -> None:
        for index, part in enumerate(parts):
            if index < len(self._ids):
                if self._shown[index] != part:
                    await self._calls.edit(
                        channel=self._channel,
                        ts=self._ids[index],
                        part=part,
                        delivery_key=self._draft.delivery_key,
                        index=index,
                    )
                    self._shown[index] = part
                continue
            ts = await self._calls.post(
                channel=self._channel,
                thread_ts=self._thread,
                part=part,
                delivery_key=self._draft.delivery_key,
                index=index,
                posted_before=False,
            )
            self._ids.append(ts)
            self._shown.append(part)


class StatusShown:
    """What :meth:`begin` shows on the message answered, best effort."""

    def __init__(self, *, calls: SlackCalls, agent: str) -> None:
        self._calls = calls
        self._agent = agent
        self.status_disabled = False

    async def on_it(self, draft: Draft, *, reactions: bool, streaming: Streaming) -> None:
        target = draft.reply_target
        channel, message = target.get("channel", ""), target.get("message_ts", "")
        if reactions and channel and message:
            try:
                await self._calls.react(channel=channel, ts=message, name=ON_IT)
            except Exception as error:  # best effort: a reaction never fails a reply
                self._log("slack.reaction_failed", error)
        thread = live_thread(target, streaming)
        if self.status_disabled or not (channel and thread):
            return
        try:
            await self._calls.set_status(channel=channel, thread_ts=thread, status=THINKING)
        except DeliveryError as error:
            if error.retry_after is None and not error.in_doubt:
                self.status_disabled = True  # no scope, or not here: say so once
                self._log("slack.status_unavailable", error)
        except Exception as error:
            self._log("slack.status_unavailable", error)

    async def done(self, target: Mapping[str, str], *, failed: bool) -> None:
        channel, message = target.get("channel", ""), target.get("message_ts", "")
        if not (channel and message):
            return
        try:
            await self._calls.unreact(channel=channel, ts=message, name=ON_IT)
            await self._calls.react(
                channel=channel, ts=message, name=FAILED if failed else ANSWERED
            )
        except Exception as error:  # best effort: the reply is delivered already
            self._log("slack.reaction_failed", error)

    def _log(self, event: str, error: Exception) -> None:
        log_event(logger, event, level=logging.WARNING, agent=self._agent, error=str(error))
