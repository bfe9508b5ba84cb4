"""Telling a refused person the one thing they may learn (``denied_text`` or a pairing code).

A refused message has no session, so there is no outbox row to deliver through: the notice is
sent once, straight through the channel, after the ingest transaction that decided it has
committed (the database already keeps it to once a day, or once per code). It is best-effort:
a failure is logged and not retried. Channels whose replies live in the database (the web
chat) get nothing here; their caller answers the request with the notice.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.infra.logs import log_event
from bridge.ports.contract import Channels
from bridge.ports.events import InboundMessage, Reply
from bridge.store.messages import new_delivery_key

logger = logging.getLogger(__name__)

NOTICE_TIMEOUT_SECONDS = 30.0


class Notices:
    def __init__(self, *, channels: Channels) -> None:
        self._channels = channels
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def send(self, message: InboundMessage, text: str) -> None:
        """Send ``text`` into the conversation ``message`` came from, in the background."""
        if self._stopped or self._channels.capabilities(message.channel).stores_replies:
            return
        task = asyncio.create_task(self._send(message, text), name="bridge-access-notice")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: InboundMessage, text: str) -> None:
        channel = self._channels.get(message.channel, message.agent_slug)
        if channel is None:
            return
        reply = Reply(
            message_id=0,
            session_id=0,
            delivery_key=new_delivery_key(),
            agent_slug=message.agent_slug,
            channel=message.channel,
            external_conv_id=message.external_conv_id,
            text=text,
            reply_target=dict(message.reply_target),
            in_doubt=False,
            attempt=1,
        )
        try:
            async with asyncio.timeout(NOTICE_TIMEOUT_SECONDS):
                await channel.send(reply)
        except Exception as error:
            log_event(
                logger,
                "access.notice_failed",
                level=logging.WARNING,
                channel=message.channel,
                agent=message.agent_slug,
                conversation=message.external_conv_id,
                error=str(error),
            )
            return
        log_event(
            logger,
            "access.notice_sent",
            channel=message.channel,
            agent=message.agent_slug,
            conversation=message.external_conv_id,
        )

    async def stop(self) -> None:
        """Let the notices under way finish (each is bounded by its timeout)."""
        self._stopped = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
