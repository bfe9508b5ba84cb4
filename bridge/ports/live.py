"""Live replies: what a channel may show while a reply is written, and its status.

While the agent writes, the core hands each new text *so far* to the channel's
:class:`LiveReply`, never faster than the channel takes it (the core coalesces chunks: calls
per reply are bounded by time, not by chunk count). What a live reply shows is best effort;
the final text is not: it is stored and delivered through the outbox like any reply, and
``Channel.send`` then finishes the messages the live reply started (their ids come back in
``Reply.live_ids``) instead of posting new ones.

The platform messages a live reply starts are recorded in the database as they appear (the core
does it with what :meth:`LiveReply.show` returns), so a process that takes the work over after
a crash resumes or finishes those messages: a reply is never shown twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridge.ports.contract import Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """A reply about to be written: where it goes and the key its final delivery carries."""

    session_id: int
    reply_to: int
    """The bridge's id of the message being answered."""
    delivery_key: str
    agent_slug: str
    channel: str
    external_conv_id: str
    reply_target: dict[str, str]
    """Where the reply goes, as the channel's inbound side recorded it (it names the message
    being answered, which carries the status reaction)."""
    started: tuple[str, ...] = ()
    """Platform messages an earlier attempt started for this reply (it crashed): continue
    these, never start the same part again."""


class LiveReply(Protocol):
    """One reply being written, as one channel shows it."""

    interval_seconds: float
    """The least time between two :meth:`show` calls, within the platform's rate limits."""

    async def show(self, text: str) -> Sequence[str]:
        """Show ``text`` (the whole reply so far, never a delta). Returns the platform ids of
        the messages this reply has started so far, in part order. May raise DeliveryError
        (with ``retry_after`` on a rate limit: the core waits that long before the next
        call); a failure here never loses the reply, whose final text goes through the
        outbox."""
        ...

    async def close(self) -> None:
        """The agent is done (or failed): stop what only runs while it writes (typing). The
        final text and the final status are ``send``'s, not this method's."""
        ...


@runtime_checkable
class LiveChannel(Channel, Protocol):
    """A channel that shows replies while they are written, or shows status, or both."""

    async def begin(self, draft: Draft) -> LiveReply:
        """The message is claimed for answering: show that the agent is on it (a status
        reaction, typing, an assistant status) and return the live reply. Best effort:
        raises nothing but ``asyncio.CancelledError``."""
        ...
