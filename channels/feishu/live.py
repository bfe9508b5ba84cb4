"""Feishu replies shown while they are written: one CardKit streaming card per part.

A part's card is created with the text so far, sent as a reply to the user's message (with
the ``uuid`` the final delivery uses for that part), then its Markdown element is given the
whole text so far at each :meth:`FeishuLiveReply.show`. The final delivery
(:mod:`channels.feishu.final`) writes the exact text and ends streaming mode.

What a card needs is durable without any memory of this process:

* The live id of a part is ``message_id|card_id|created_ms`` (:class:`LiveCard`): the core
  records it, so a final delivery in another process, after a crash, knows the card.
* A card's operations need a ``sequence`` that strictly increases across everything done to
  that card, by any process: it is the milliseconds since the card was created (``created_ms``,
  this host's clock), raised past the last one this process used. A later process's clock is
  past every sequence an earlier one sent (an operation takes more than a millisecond).
* A card this process sent but never recorded (it crashed between Feishu's answer and the
  record) is found again through the ``uuid``: replying again with it returns the first
  message, whose content names its card.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.infra.logs import log_event
from bridge.ports.errors import DeliveryError
from bridge.ports.live import Draft
from channels.feishu.client import INVALID_TOKEN_CODES, FeishuClient, FeishuError
from channels.feishu.outbound import ELEMENT_ID, card_markdown, reply_parts, streaming_card, summary

logger = logging.getLogger(__name__)

LIVE_INTERVAL_SECONDS = 0.3
"""Between two shows of a reply. Feishu allows 10 operations a second on one card; a show
is one operation on the card being written, so this leaves room for the final delivery's two
(text, then streaming off) and a retry, within the same second, and keeps an app with many
replies at once under its 50 calls a second per API."""
STREAMING_CLOSED = frozenset({300309, 200850})
"""The card is no longer streaming: closed (by an earlier delivery) or auto-closed after 10
minutes."""
SEQUENCE_NOT_INCREASING = 300317
SEQUENCE_JUMPS = (1_000, 60_000, 3_600_000)
"""How far a refused sequence is raised before trying again (a clock behind the one that
sent the last operation)."""


@dataclass(frozen=True, slots=True)
class LiveCard:
    """One part's streaming card: the message showing it, the card, when it was created."""

    message_id: str
    card_id: str
    created_ms: int

    def encode(self) -> str:
        return f"{self.message_id}|{self.card_id}|{self.created_ms}"

    @classmethod
    def decode(cls, live_id: str) -> LiveCard | None:
        """The card of a live id; None for an id that is not one (never written by this)."""
        message_id, _, rest = live_id.partition("|")
        card_id, _, created = rest.partition("|")
        if not message_id or not card_id or not created.isdigit():
            return None
        return cls(message_id, card_id, int(created))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def card_reference(message: dict[str, Any]) -> str | None:
    """The card a card message shows (its content ``{"type":"card","data":{"card_id"}}``)."""
    if message.get("msg_type") != "interactive":
        return None
    try:
        content = json.loads(message.get("body", {}).get("content") or "{}")
    except (ValueError, AttributeError):
        return None
    data = content.get("data") if isinstance(content, dict) else None
    card_id = data.get("card_id") if isinstance(data, dict) else None
    return card_id if isinstance(card_id, str) and card_id else None


def delivery_error(error: FeishuError, *, done_any: bool = False) -> DeliveryError:
    """What the core needs to know of a failed call: when to retry, whether it may have
    landed, whether retrying can help."""
    return DeliveryError(
        str(error),
        retry_after=error.retry_after,
        in_doubt=error.in_doubt or done_any,
        permanent=error.code is not None
        and error.code not in INVALID_TOKEN_CODES
        and error.retry_after is None
        and error.code != SEQUENCE_NOT_INCREASING
        and not done_any,
    )


class CardStreams:
    """The CardKit operations of one app, with the sequence each card is at in this process."""

    def __init__(self, *, client: FeishuClient) -> None:
        self._client = client
        self._last: dict[str, int] = {}

    def _sequence(self, card: LiveCard) -> int:
        value = max(1, now_ms() - card.created_ms, self._last.get(card.card_id, 0) + 1)
        self._last[card.card_id] = value
        return value

    async def _sequenced(self, card: LiveCard, operation: Any) -> None:
        """Run ``operation(sequence)``; a sequence Feishu finds too low is raised and tried
        again (another host's clock was ahead)."""
        for jump in (*SEQUENCE_JUMPS, None):
            try:
                await operation(self._sequence(card))
                return
            except FeishuError as error:
                if error.code != SEQUENCE_NOT_INCREASING or jump is None:
                    raise
                self._last[card.card_id] = self._last.get(card.card_id, 0) + jump

    async def start(
        self, *, reply_to: str, in_thread: bool, uuid: str, part: str
    ) -> tuple[LiveCard, bool]:
        """A streaming card showing ``part``, sent as a reply with ``uuid``; and whether it is
        a card an earlier attempt sent (found by the uuid), whose text is not ``part``."""
        created_ms = now_ms()
        card_id = await self._client.create_card(streaming_card(part))
        message = await self._client.reply(
            message_id=reply_to,
            msg_type="interactive",
            content={"type": "card", "data": {"card_id": card_id}},
            in_thread=in_thread,
            uuid=uuid,
        )
        message_id = str(message["message_id"])
        sent_card = card_reference(message) or await self.card_of(message_id) or card_id
        if sent_card == card_id:
            return LiveCard(message_id, card_id, created_ms), False
        return self.found(message_id, sent_card, message), True

    @staticmethod
    def found(message_id: str, card_id: str, message: dict[str, Any]) -> LiveCard:
        """A card another attempt sent: its creation is not known, the message's is (later,
        so sequences counted from it are lower than the other attempt's; a refused one is
        raised, see :meth:`_sequenced`)."""
        created = str(message.get("create_time") or "")
        return LiveCard(message_id, card_id, int(created) if created.isdigit() else now_ms())

    async def card_of(self, message_id: str) -> str | None:
        try:
            return card_reference(await self._client.message(message_id))
        except FeishuError:
            return None

    async def show(self, card: LiveCard, part: str) -> None:
        async def put(sequence: int) -> None:
            await self._client.card_text(card.card_id, ELEMENT_ID, card_markdown(part), sequence)

        await self._sequenced(card, put)

    async def _streaming(self, card: LiveCard, on: bool, part: str) -> None:
        config: dict[str, Any] = {"streaming_mode": on}
        if not on:
            config["summary"] = {"content": summary(part)}

        async def patch(sequence: int) -> None:
            await self._client.card_settings(card.card_id, config, sequence)

        await self._sequenced(card, patch)

    async def finish(self, card: LiveCard, part: str) -> None:
        """The card shows exactly ``part`` and no longer streams (the chat list's preview
        shows the text, not "[生成中...]"). Repeatable: a closed card (by an earlier attempt,
        or Feishu after 10 minutes) is reopened for the text and closed again."""
        try:
            await self.show(card, part)
        except FeishuError as error:
            if error.code not in STREAMING_CLOSED:
                raise
            await self._streaming(card, True, part)
            await self.show(card, part)
        await self._streaming(card, False, part)
        self._last.pop(card.card_id, None)


class FeishuLiveReply:
    """One reply while it is written (see the module docstring). With streaming off it shows
    nothing: the status reaction is all the user sees until the reply is posted."""

    interval_seconds = LIVE_INTERVAL_SECONDS

    def __init__(self, *, streams: CardStreams | None, draft: Draft) -> None:
        self._streams = streams
        self._draft = draft
        self._cards = [card for card in map(LiveCard.decode, draft.started) if card is not None]
        self._shown: dict[int, str] = {}

    def _ids(self) -> list[str]:
        return [card.encode() for card in self._cards]

    async def show(self, text: str) -> Sequence[str]:
        """Each part of ``text`` as the final delivery splits it: parts with a card get their
        new text, then at most one new card starts (its id is returned at once, to be
        recorded before anything else can fail)."""
        if self._streams is None:
            return list(self._draft.started)
        parts = reply_parts(text)
        try:
            for index, card in enumerate(self._cards[: len(parts)]):
                if self._shown.get(index) != parts[index]:
                    await self._streams.show(card, parts[index])
                    self._shown[index] = parts[index]
            if len(parts) > len(self._cards):
                index = len(self._cards)
                target = self._draft.reply_target
                card, earlier = await self._streams.start(
                    reply_to=target["message_id"],
                    in_thread=bool(target.get("in_thread")),
                    uuid=f"{self._draft.delivery_key}-{index}",
                    part=parts[index],
                )
                self._cards.append(card)
                if not earlier:
                    self._shown[index] = parts[index]
        except FeishuError as error:
            raise delivery_error(error) from error
        return self._ids()

    async def close(self) -> None:
        return None


def log_failure(event: str, error: Exception, **fields: Any) -> None:
    log_event(
        logger,
        event,
        level=logging.WARNING,
        error=f"{type(error).__name__}: {error}",
        **fields,
    )
