"""The final delivery of a Slack reply: ``Channel.send``.

Parts the live reply started are edited to their exact final text (a stream still open is
stopped first); the others are posted with the delivery key in their metadata, unless an
in-doubt look-up finds them already posted; live messages beyond the final part count are
deleted. The reply's files follow into the same thread (:mod:`channels.slack.uploads`; a
reply of files only posts no text). Then the status reaction changes (👀 -> ✅ or ❌), best
effort. Every step is safe to repeat, so a retried or in-doubt delivery ends with the same
single set of messages and files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.infra.logs import log_event
from bridge.ports.errors import DeliveryError
from bridge.ports.events import Reply
from channels.slack.calls import SlackCalls
from channels.slack.inbound import BotIdentity
from channels.slack.live import StatusShown, live_thread
from channels.slack.outbound import api_error, history_query, posted_parts, reply_parts
from channels.slack.settings import SlackChannelSettings
from channels.slack.uploads import SlackUploads

logger = logging.getLogger(__name__)
MAX_LOOKUP_PAGES = 50


class FinalDelivery:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        http: aiohttp.ClientSession,
        identity: BotIdentity,
        settings: SlackChannelSettings,
        status: StatusShown,
    ) -> None:
        self._client = client
        self._calls = SlackCalls(client)
        self._uploads = SlackUploads(client=client, http=http)
        self._identity = identity
        self._settings = settings
        self._status = status

    async def send(self, reply: Reply) -> Sequence[str]:
        channel = reply.reply_target["channel"]
        live = list(reply.live_ids)
        if live:
            thread_ts = live_thread(reply.reply_target, self._settings.streaming)
        else:
            thread_ts = reply.reply_target.get("thread_ts") or None
        parts = reply_parts(reply.text, reply.mentions)
        if reply.files and not reply.text.strip():
            parts = []  # files alone: no empty message before them
        # A live post may have landed unrecorded (its answer lost): look before posting more.
        look = reply.in_doubt or (bool(live) and len(parts) > len(live))
        landed = await self._already_posted(reply, thread_ts, parts=len(parts)) if look else {}
        ids: list[str] = []
        for index, part in enumerate(parts):
            if index < len(live):
                if index == len(live) - 1 and self._settings.streaming == "native":
                    # The last live part may still stream; an edit needs it stopped.
                    await self._calls.stop_stream(channel=channel, ts=live[index])
                edited = await self._calls.edit(
                    channel=channel,
                    ts=live[index],
                    part=part,
                    delivery_key=reply.delivery_key,
                    index=index,
                )
                if edited:
                    ids.append(live[index])
                    continue
            if index in landed:
                ids.append(landed[index])
                continue
            ts = await self._calls.post(
                channel=channel,
                thread_ts=thread_ts,
                part=part,
                delivery_key=reply.delivery_key,
                index=index,
                posted_before=bool(ids),
            )
            ids.append(ts)
        for extra in live[len(parts) :]:
            await self._calls.stop_stream(channel=channel, ts=extra)
            await self._calls.delete(channel=channel, ts=extra)
        await self._uploads.send(
            reply, channel=channel, thread_ts=thread_ts, posted_before=bool(ids)
        )
        if reply.outcome is not None and self._settings.status_reactions:
            await self._status.done(reply.reply_target, failed=reply.outcome == "failed")
        return ids

    async def _already_posted(
        self, reply: Reply, thread_ts: str | None, *, parts: int
    ) -> dict[int, str]:
        """The parts of an in-doubt delivery that Slack already has, found by their metadata:
        every page from the asked message on (a reply is never older), until all are found."""
        query = history_query(reply.reply_target)
        landed: dict[int, str] = {}
        cursor: str | None = None
        for _page in range(MAX_LOOKUP_PAGES):
            try:
                if thread_ts:
                    found = await self._client.conversations_replies(
                        ts=thread_ts, cursor=cursor, **query
                    )
                else:
                    found = await self._client.conversations_history(cursor=cursor, **query)
            except SlackApiError as error:
                raise api_error(error, posted_before=True) from None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise DeliveryError(
                    f"slack lookup before resend: {error!r}", in_doubt=True
                ) from None
            landed.update(
                posted_parts(
                    found.get("messages") or [],
                    bot_id=self._identity.bot_id,
                    delivery_key=reply.delivery_key,
                )
            )
            cursor = (found.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None or len(landed) >= parts:
                break
        log_event(logger, "slack.in_doubt_checked", message=reply.message_id, found=len(landed))
        return landed
