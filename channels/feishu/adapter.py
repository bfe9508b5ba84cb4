"""The Feishu channel's I/O: the event webhook at ``POST /feishu/{agent}/events`` and replies
through the Open API.

An event is acknowledged (200) only after it is stored, well inside Feishu's 3 seconds (name
look-ups are bounded); a failed store answers 500 and Feishu redelivers (15 s, 5 min, 1 h,
6 h), which the unique message key turns into a no-op, across restarts and processes.
A signed event is refused unless its timestamp is recent (no replay of captured requests);
membership events apply in the order they happened (a replayed one changes nothing).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bridge.infra.logs import log_event
from bridge.infra.tasks import cancel_and_wait
from bridge.ports.contract import ChannelContext, ChannelStatus, FetchedFile, PostAddress
from bridge.ports.errors import DeliveryError, FileFetchError, InvalidMessage
from bridge.ports.events import MAX_ID_LENGTH, ConversationChange, Reply, storable_text
from bridge.ports.live import Draft, LiveReply
from channels.feishu.client import FeishuClient, FeishuError
from channels.feishu.crypto import (
    UndecryptableEvent,
    decrypt,
    signature_matches,
    timestamp_is_fresh,
)
from channels.feishu.final import deliver, mark_on_it, mark_outcome
from channels.feishu.inbound import (
    CHANNEL,
    Ignored,
    MalformedEvent,
    conversation_id,
    created_at,
    is_storable,
    post_address,
    read_message,
    to_inbound,
)
from channels.feishu.live import CardStreams, FeishuLiveReply
from channels.feishu.resources import fetch_resource
from channels.feishu.settings import FeishuChannelSettings
from channels.names import NameLookup

logger = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("X-Lark-Request-Timestamp", "X-Lark-Request-Nonce", "X-Lark-Signature")
MESSAGE_EVENT = "im.message.receive_v1"
BOT_ADDED = "im.chat.member.bot.added_v1"
BOT_REMOVED = "im.chat.member.bot.deleted_v1"


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FeishuChannel:
    name = CHANNEL

    def __init__(
        self,
        *,
        context: ChannelContext[FeishuChannelSettings],
    ) -> None:
        self._agent = context.agent
        settings = self._settings = context.settings
        self._dispatch = context.dispatch
        self._http: aiohttp.ClientSession | None = None
        self._client: FeishuClient | None = None
        self._streams: CardStreams | None = None
        self._bot_open_id: str | None = None
        self._identity_lock = asyncio.Lock()
        self._identity_task: asyncio.Task[None] | None = None
        self._problem = "not started"
        self._names = NameLookup(
            platform="feishu",
            ttl_seconds=settings.names_cache_hours * 3600,
            errors=(FeishuError, TimeoutError),
            logger=logger,
            timeout_seconds=settings.lookup_timeout_seconds,
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._client = FeishuClient(
            http=self._http,
            base_url=self._settings.base_url,
            app_id=self._settings.app_id,
            app_secret=self._settings.app_secret.get_secret_value(),
            timeout_seconds=self._settings.request_timeout_seconds,
        )
        self._streams = CardStreams(client=self._client)
        self._problem = "the bot's identity is not fetched yet"
        # In the background, so a slow Open API holds up no other channel's start, yet
        # mention_id() knows the id soon after; an event that comes first waits for the same
        # request (the lock in _bot_identity) or, if it failed, makes its own.
        self._identity_task = asyncio.create_task(
            self._prefetch_identity(), name=f"feishu-identity-{self._agent.slug}"
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._identity_task)
        self._identity_task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def status(self) -> ChannelStatus:
        if self._bot_open_id is None:
            return ChannelStatus(ready=False, detail=self._problem)
        return ChannelStatus(ready=True)

    def mention_id(self) -> str | None:
        """The bot's open_id, for another agent's reply to mention this one; None until known."""
        return self._bot_open_id

    def post_address(
        self,
        *,
        external_conv_id: str,
        thread: str | None,
        last_target: Mapping[str, str] | None,
    ) -> PostAddress:
        """See :func:`~channels.feishu.inbound.post_address`."""
        return post_address(
            external_conv_id=external_conv_id, thread=thread, last_target=last_target
        )

    async def _prefetch_identity(self) -> None:
        try:
            await self._bot_identity()
        except Exception as error:  # only logged: the lazy path in _on_message tries again
            log_event(
                logger,
                "feishu.identity_failed",
                level=logging.WARNING,
                agent=self._agent.slug,
                error=f"{type(error).__name__}: {error}",
            )

    async def _bot_identity(self) -> str | None:
        """The bot's open_id, which mentions are matched against (fetched once, then kept).

        The lock makes the start's prefetch and an early event share one request."""
        async with self._identity_lock:
            if self._bot_open_id is None and self._client is not None:
                try:
                    self._bot_open_id = await self._client.bot_open_id()
                    log_event(logger, "feishu.ready", agent=self._agent.slug, bot=self._bot_open_id)
                except FeishuError as error:
                    self._problem = f"bot/v3/info failed: {error}"
                    log_event(
                        logger,
                        "feishu.not_ready",
                        level=logging.WARNING,
                        agent=self._agent.slug,
                        error=str(error),
                    )
        return self._bot_open_id

    # --- the webhook ---------------------------------------------------------------------

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # past http.max_body_bytes: 413
        try:
            payload = self._open(raw, request)
            self._check_token(payload)
            if payload.get("type") == "url_verification":
                return web.json_response({"challenge": payload.get("challenge", "")})
            await self._route(payload)
        except Refused as refusal:
            log_event(
                logger,
                "feishu.refused",
                agent=self._agent.slug,
                status=refusal.status,
                reason=refusal.reason,
            )
            return web.json_response({"msg": refusal.reason}, status=refusal.status)
        return web.json_response({"msg": "success"})

    def _open(self, raw: bytes, request: web.Request) -> dict[str, Any]:
        """The event as JSON: in Encrypt Key mode its signature and age are checked first,
        over the exact bytes (nothing is parsed for a forged or replayed request), then it is
        decrypted."""
        key = self._settings.encrypt_key
        if key is None:
            body = _json_object(raw)
            if "encrypt" in body:
                raise Refused(400, "encrypted event, but no encrypt_key is configured")
            return body
        encrypt_key = key.get_secret_value()
        stamp, nonce, given = (request.headers.get(name) for name in SIGNATURE_HEADERS)
        signed = stamp is not None and nonce is not None and given is not None
        if signed:
            self._check_signature(raw, stamp or "", nonce or "", given or "", encrypt_key)
        body = _json_object(raw)
        if not isinstance(body.get("encrypt"), str):
            raise Refused(400, "expected an encrypted event")
        try:
            payload = _json_object(decrypt(encrypt_key, body["encrypt"]).encode())
        except UndecryptableEvent as error:
            raise Refused(400, f"cannot decrypt: {error}") from None
        # Feishu signs every event except the URL check.
        if not signed and payload.get("type") != "url_verification":
            raise Refused(401, "missing X-Lark-Signature")
        return payload

    def _check_signature(
        self, raw: bytes, stamp: str, nonce: str, given: str, encrypt_key: str
    ) -> None:
        """401 unless the request was signed with the Encrypt Key, recently: the signature
        covers the timestamp, so a captured request cannot be replayed once it is stale."""
        window = self._settings.replay_window_seconds
        if not timestamp_is_fresh(stamp, now=time.time(), window_seconds=window):
            raise Refused(401, f"timestamp missing or more than {window} s from now")
        try:
            genuine = signature_matches(
                timestamp=stamp, nonce=nonce, encrypt_key=encrypt_key, body=raw, given=given
            )
        except UnicodeEncodeError:  # header bytes that are no UTF-8 (aiohttp passes surrogates)
            genuine = False
        if not genuine:
            raise Refused(401, "signature verification failed")

    def _check_token(self, payload: dict[str, Any]) -> None:
        header = payload.get("header")
        token = header.get("token") if isinstance(header, dict) else payload.get("token")
        expected = self._settings.verification_token.get_secret_value()
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
            raise Refused(401, "invalid verification token")

    async def _route(self, payload: dict[str, Any]) -> None:
        header = payload.get("header")
        event = payload.get("event")
        if not isinstance(header, dict) or not isinstance(event, dict):
            raise Refused(400, "not a schema 2.0 event")
        kind = header.get("event_type")
        if kind == MESSAGE_EVENT:
            await self._on_message(event)
        elif kind in (BOT_ADDED, BOT_REMOVED):
            await self._on_membership(header, event, present=kind == BOT_ADDED)
        else:
            logger.debug("feishu event %s acknowledged and ignored", kind)

    async def _on_message(self, event: dict[str, Any]) -> None:
        try:
            message = read_message(event)
        except MalformedEvent as error:
            raise Refused(400, str(error)) from None
        if isinstance(message, Ignored):
            return
        bot_open_id = await self._bot_identity()
        if bot_open_id is None:  # cannot tell mentions apart yet: let Feishu come back
            raise Refused(503, "the bot's identity is not known yet")
        sender_name, group_name = await self._names_for(
            message.sender_open_id, message.chat_id if message.is_group else None
        )
        inbound = to_inbound(
            message,
            agent_slug=self._agent.slug,
            bot_open_id=bot_open_id,
            require_mention=self._settings.require_mention,
            sender_name=sender_name,
            group_name=group_name,
        )
        if isinstance(inbound, Ignored):
            logger.debug("feishu message %s ignored: %s", message.message_id, inbound.reason)
            return
        try:
            await self._dispatch(inbound)
        except InvalidMessage as error:
            raise Refused(400, str(error)) from None
        except Exception as error:  # not stored: Feishu redelivers
            raise Refused(500, f"not stored: {type(error).__name__}") from error

    async def _on_membership(
        self, header: dict[str, Any], event: dict[str, Any], *, present: bool
    ) -> None:
        """The bot joined or left a group. Applied in the order the changes happened (by
        ``create_time``), so a redelivered, replayed or late event changes nothing."""
        chat_id = event.get("chat_id")
        if not is_storable(chat_id):
            raise Refused(400, "event.chat_id missing or malformed")
        try:
            changed_at = created_at(
                header,
                now=datetime.now(UTC),
                max_ahead=timedelta(seconds=self._settings.replay_window_seconds),
            )
        except MalformedEvent as error:
            raise Refused(400, str(error)) from None
        name = None
        if present:
            name = await self._lookup(f"chat:{chat_id}", lambda client: client.chat_name(chat_id))
            given = event.get("name")
            if not name and isinstance(given, str) and given.strip():
                name = storable_text(given)[:MAX_ID_LENGTH]
        try:
            await self._dispatch(
                ConversationChange(
                    channel=CHANNEL,
                    agent_slug=self._agent.slug,
                    external_conv_id=conversation_id(chat_id),
                    group_name=name,
                    present=present,
                    changed_at=changed_at,
                )
            )
        except InvalidMessage as error:
            raise Refused(400, str(error)) from None
        except Exception as error:
            raise Refused(500, f"not stored: {type(error).__name__}") from error

    # --- names ---------------------------------------------------------------------------

    async def _names_for(self, open_id: str, chat_id: str | None) -> tuple[str | None, str | None]:
        """Both names at once, each bounded so the event is still acknowledged in time."""
        sender = self._lookup(f"user:{open_id}", lambda client: client.user_name(open_id))
        if chat_id is None:
            return await sender, None
        chat = self._lookup(f"chat:{chat_id}", lambda client: client.chat_name(chat_id))
        return await asyncio.gather(sender, chat)

    async def _lookup(
        self, key: str, fetch: Callable[[FeishuClient], Awaitable[str | None]]
    ) -> str | None:
        client = self._client
        if client is None:
            return self._names.cached(key)
        return await self._names.name(key, lambda: fetch(client))

    # --- outbound ------------------------------------------------------------------------

    async def begin(self, draft: Draft) -> LiveReply:
        """Status ``OnIt`` on the message being answered, and the live reply (cards unless
        streaming is off)."""
        client, streams = self._client, self._streams
        if client is not None and self._settings.status_reactions:
            message_id = draft.reply_target.get("message_id")
            if message_id:
                await mark_on_it(client=client, message_id=message_id, agent=self._agent.slug)
        card_mode = self._settings.streaming == "card"
        return FeishuLiveReply(streams=streams if card_mode else None, draft=draft)

    async def send(self, reply: Reply) -> Sequence[str]:
        if self._client is None or self._streams is None:
            raise DeliveryError("the Feishu channel is not started", retry_after=5.0)
        ids = await deliver(client=self._client, streams=self._streams, reply=reply)
        message_id = reply.reply_target.get("message_id")
        if reply.outcome is not None and message_id and self._settings.status_reactions:
            await mark_outcome(
                client=self._client,
                message_id=message_id,
                outcome=reply.outcome,
                app_id=self._settings.app_id,
                agent=self._agent.slug,
            )
        return ids

    async def fetch_file(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile:
        """A file a user sent (see :mod:`channels.feishu.resources`)."""
        if self._client is None:
            raise FileFetchError("the Feishu channel is not started")
        return await fetch_resource(self._client, source, max_bytes=max_bytes)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Refused(400, "the body is not a JSON object")
    return value
