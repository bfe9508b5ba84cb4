"""The Web API calls a reply makes, each failure a :class:`DeliveryError` naming its method.

Errors that mean "already so" are success here: a stream that is no longer streaming when it
is stopped, a message already gone when it is deleted, a reaction already there (or already
gone). That makes every step of a reply safe to repeat after a retry or a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.ports.errors import DeliveryError
from channels.slack.outbound import (
    api_error,
    delivery_metadata,
    error_code,
    message_arguments,
    post_arguments,
)

NOT_STREAMING = frozenset(
    {
        "message_not_in_streaming_state",
        "stopped_by_user",
        "message_not_found",
        "message_not_owned_by_app",
    }
)
"""A stream that takes no more text: what it shows is fixed by the final edit."""


class StreamRefused(Exception):
    """``chat.startStream`` refused for a reason no retry fixes (no scope, not here)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class SlackCalls:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def _call(
        self,
        method: str,
        call: Awaitable[Any],
        *,
        posted_before: bool = False,
        tolerate: frozenset[str] = frozenset(),
    ) -> Any:
        """The answer of ``call``; None when it failed with an error in ``tolerate``."""
        try:
            return await call
        except SlackApiError as error:
            if error_code(error) in tolerate:
                return None
            raise api_error(error, posted_before=posted_before, method=method) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeliveryError(f"slack {method}: {error!r}", in_doubt=True) from None

    # --- messages ----------------------------------------------------------------------------

    async def post(
        self,
        *,
        channel: str,
        thread_ts: str | None,
        part: str,
        delivery_key: str,
        index: int,
        posted_before: bool,
    ) -> str:
        arguments = post_arguments(
            channel=channel,
            thread_ts=thread_ts,
            text=part,
            delivery_key=delivery_key,
            part=index,
        )
        response = await self._call(
            "chat.postMessage",
            self._client.chat_postMessage(**arguments),
            posted_before=posted_before,
        )
        return str(response["ts"])

    async def edit(
        self, *, channel: str, ts: str, part: str, delivery_key: str, index: int
    ) -> bool:
        """Make the message at ``ts`` say ``part`` (stopping its stream if it still streams).
        False when the message is gone."""
        arguments = {
            "channel": channel,
            "ts": ts,
            **message_arguments(part),
            "metadata": delivery_metadata(delivery_key, index),
        }
        try:
            await self._client.chat_update(**arguments)
            return True
        except SlackApiError as error:
            code = error_code(error)
            if code == "message_not_found":
                return False
            if code != "streaming_state_conflict":
                raise api_error(error, posted_before=False, method="chat.update") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeliveryError(f"slack chat.update: {error!r}", in_doubt=True) from None
        await self.stop_stream(channel=channel, ts=ts)
        answer = await self._call(
            "chat.update",
            self._client.chat_update(**arguments),
            tolerate=frozenset({"message_not_found"}),
        )
        return answer is not None

    async def delete(self, *, channel: str, ts: str) -> None:
        await self._call(
            "chat.delete",
            self._client.chat_delete(channel=channel, ts=ts),
            tolerate=frozenset({"message_not_found"}),
        )

    # --- native streams ----------------------------------------------------------------------

    async def start_stream(
        self, *, channel: str, thread_ts: str, team: str, user: str, text: str
    ) -> str:
        """A new streamed message; :class:`StreamRefused` if Slack will not stream here."""
        try:
            response = await self._client.chat_startStream(
                channel=channel,
                thread_ts=thread_ts,
                recipient_team_id=team,
                recipient_user_id=user,
                markdown_text=text,
            )
        except SlackApiError as error:
            code = error_code(error)
            status = error.response.status_code
            if code != "ratelimited" and status < 500:
                raise StreamRefused(code) from None
            raise api_error(error, posted_before=False, method="chat.startStream") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeliveryError(f"slack chat.startStream: {error!r}", in_doubt=True) from None
        return str(response["ts"])

    async def append_stream(self, *, channel: str, ts: str, text: str) -> bool:
        """Add ``text`` to the stream; False when it takes no more."""
        answer = await self._call(
            "chat.appendStream",
            self._client.chat_appendStream(channel=channel, ts=ts, markdown_text=text),
            tolerate=NOT_STREAMING,
        )
        return answer is not None

    async def stop_stream(self, *, channel: str, ts: str, text: str = "") -> None:
        await self._call(
            "chat.stopStream",
            self._client.chat_stopStream(channel=channel, ts=ts, markdown_text=text or None),
            tolerate=NOT_STREAMING,
        )

    # --- status ------------------------------------------------------------------------------

    async def react(self, *, channel: str, ts: str, name: str) -> None:
        await self._call(
            "reactions.add",
            self._client.reactions_add(channel=channel, timestamp=ts, name=name),
            tolerate=frozenset({"already_reacted"}),
        )

    async def unreact(self, *, channel: str, ts: str, name: str) -> None:
        await self._call(
            "reactions.remove",
            self._client.reactions_remove(channel=channel, timestamp=ts, name=name),
            tolerate=frozenset({"no_reaction"}),
        )

    async def set_status(self, *, channel: str, thread_ts: str, status: str) -> None:
        await self._call(
            "assistant.threads.setStatus",
            self._client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status
            ),
        )
