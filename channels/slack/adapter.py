"""The Slack channel's I/O: slack-bolt on the bridge's aiohttp app (or Socket Mode), and
``chat.postMessage`` for replies.

Bolt runs with ``process_before_response=True``: Slack gets its 200 only after the message is
stored (a few milliseconds), so an acknowledged event is never lost, and the agent's work
happens later in the pipeline, well outside Slack's 3-second window. A listener that fails (the
database is down) answers 500 and Slack redelivers; the unique message key makes that a no-op.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.infra.logs import log_event
from bridge.ports.contract import ChannelContext, ChannelStatus, FetchedFile, PostAddress
from bridge.ports.errors import (
    CannotPost,
    DeliveryError,
    FileFetchError,
    InvalidMessage,
    UnknownAgent,
)
from bridge.ports.events import InboundMessage, Reply, Sender
from bridge.ports.live import Draft, LiveReply
from channels.names import NameLookup
from channels.slack.calls import SlackCalls
from channels.slack.files import allowed_origins, fetch_slack_file
from channels.slack.final import FinalDelivery
from channels.slack.inbound import BotIdentity, Ignored, Rules, classify, post_address
from channels.slack.live import SlackLive, StatusShown
from channels.slack.settings import SlackChannelSettings

logger = logging.getLogger(__name__)


def _bolt_request(raw: bytes, request: web.Request, signing_secret: str | None) -> AsyncBoltRequest:
    """The Bolt request for one Events API POST, or a 4xx raised for one never to be served.

    Checked before Bolt sees it, because Bolt parses a body before checking its signature and
    answers 500 to whatever it cannot read (a garbage timestamp, broken UTF-8 or JSON, a body
    that is no object), and Slack redelivers a 500. The signature is checked first, over the
    exact bytes (401); a signed body that is no event envelope gets 400 and
    ``X-Slack-No-Retry``. Bolt checks the signature again.
    """
    if signing_secret is not None:
        stamps = request.headers.getall("X-Slack-Request-Timestamp", [])
        signatures = request.headers.getall("X-Slack-Signature", [])
        fresh = (  # Slack's window: five minutes either way
            len(stamps) == 1
            and re.fullmatch(r"[0-9]{1,12}", stamps[0]) is not None
            and abs(time.time() - int(stamps[0])) <= 300
        )
        if not fresh or len(signatures) != 1:
            raise web.HTTPUnauthorized(text="missing or stale signature")
        base = b"v0:" + stamps[0].encode() + b":" + raw
        expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signatures[0].encode("utf-8", "replace")):
            raise web.HTTPUnauthorized(text="invalid signature")
    refusal = "the body is not a Slack event envelope"
    try:
        bolt_request = AsyncBoltRequest(
            body=raw.decode("utf-8"),
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
        # JSON may escape lone surrogates ("\ud800"): strings no database can store.
        json.dumps(bolt_request.body, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, AttributeError, LookupError, RecursionError):
        # Broken UTF-8 or JSON, a document that is no object, fields of the wrong type.
        raise web.HTTPBadRequest(text=refusal, headers={"X-Slack-No-Retry": "1"}) from None
    body: Any = bolt_request.body
    event = body.get("event") if isinstance(body, dict) else None
    shaped = isinstance(event, dict) and isinstance(event.get("type"), str)
    if not isinstance(body, dict) or ("event" in body and not shaped):
        raise web.HTTPBadRequest(text=refusal, headers={"X-Slack-No-Retry": "1"})
    return bolt_request


class SlackChannel:
    name = "slack"

    def __init__(
        self,
        *,
        context: ChannelContext[SlackChannelSettings],
    ) -> None:
        agent = self._agent = context.agent
        settings = self._settings = context.settings
        self._dispatch = context.dispatch
        self._rules = Rules(
            agent_slug=agent.slug,
            require_mention=settings.require_mention,
            thread_replies=settings.thread_replies,
        )
        self._names = NameLookup(
            platform="slack",
            ttl_seconds=settings.names_cache_hours * 3600,
            errors=(SlackApiError, aiohttp.ClientError),
            logger=logger,
        )
        self._http: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._bolt: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._identity: BotIdentity | None = None
        self._status: StatusShown | None = None
        self._final: FinalDelivery | None = None
        self._problem = "not started"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        # No SDK retries: the pipeline retries (honouring Retry-After) and knows when a failed
        # call may have landed; a second, hidden retry loop could post twice.
        self._client = AsyncWebClient(
            token=self._settings.bot_token.get_secret_value(),
            base_url=self._settings.api_base_url,
            session=self._http,
            retry_handlers=[],
            timeout=30,
        )
        try:
            auth = await self._client.auth_test()
        except SlackApiError as error:
            self._identity = None  # a restart under a revoked token must not keep the old id
            self._final = None
            self._problem = f"auth.test failed: {error.response.get('error')}; check bot_token"
            raise RuntimeError(self._problem) from None
        self._identity = BotIdentity(
            user_id=str(auth["user_id"]),
            bot_id=str(auth.get("bot_id") or ""),
            team_id=str(auth.get("team_id") or ""),
        )
        self._status = StatusShown(calls=SlackCalls(self._client), agent=self._agent.slug)
        self._final = FinalDelivery(
            client=self._client,
            http=self._http,
            identity=self._identity,
            settings=self._settings,
            status=self._status,
        )
        self._bolt = self._build_bolt()
        if self._settings.app_token is not None:
            self._socket = AsyncSocketModeHandler(
                self._bolt, app_token=self._settings.app_token.get_secret_value()
            )
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
        self._problem = ""
        log_event(
            logger,
            "slack.connected",
            agent=self._agent.slug,
            bot_user=self._identity.user_id,
            mode="socket" if self._socket else "http",
        )

    async def stop(self) -> None:
        self._problem = "stopped"
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def status(self) -> ChannelStatus:
        return ChannelStatus(ready=not self._problem, detail=self._problem)

    def mention_id(self) -> str | None:
        """The bot user id from ``auth.test``: another agent's text mentions this one as
        ``<@id>``. None until a start has authenticated."""
        return self._identity.user_id if self._identity is not None else None

    def post_address(
        self,
        *,
        external_conv_id: str,
        thread: str | None,
        last_target: Mapping[str, str] | None,
    ) -> PostAddress:
        """``slack:{team}:{channel}[:{thread_ts}]`` of the bot's own team (known once
        ``auth.test`` has answered); see :func:`~channels.slack.inbound.post_address`."""
        if self._identity is None:
            raise CannotPost(f"the Slack channel is not connected ({self._problem})")
        return post_address(
            external_conv_id=external_conv_id,
            thread=thread,
            team=self._identity.team_id,
            thread_replies=self._settings.thread_replies,
        )

    def _build_bolt(self) -> AsyncApp:
        identity = self._identity
        assert identity is not None
        token = self._settings.bot_token.get_secret_value()

        async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            # Known from auth.test at start: Bolt needs no lazy auth.test on the first event.
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id or identity.team_id,
                bot_token=token,
                bot_user_id=identity.user_id,
                bot_id=identity.bot_id,
            )

        secret = self._settings.signing_secret
        bolt = AsyncApp(
            # Bolt's own client carries no token: ``authorize`` supplies it per request.
            client=AsyncWebClient(
                base_url=self._settings.api_base_url, session=self._http, retry_handlers=[]
            ),
            signing_secret=secret.get_secret_value() if secret else None,
            # ``_bolt_request`` has checked the signature over the exact bytes already (and
            # Socket Mode has none): a second HMAC per event would change nothing.
            request_verification_enabled=False,
            authorize=authorize,
            process_before_response=True,
            logger=logging.getLogger("channels.slack.bolt"),
        )
        bolt.event("app_mention")(self._on_app_mention)
        bolt.event("message")(self._on_message)
        # Acknowledge every other event: an unmatched one would get a 404 and be redelivered.
        bolt.event(re.compile(".*"))(self._on_other_event)
        return bolt

    # --- inbound -----------------------------------------------------------------------------

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        if self._bolt is None or self._socket is not None:
            return web.json_response({"error": "slack events are not served here"}, status=503)
        raw = await request.read()  # past http.max_body_bytes: 413
        secret = self._settings.signing_secret
        try:
            bolt_request = _bolt_request(
                raw, request, secret.get_secret_value() if secret is not None else None
            )
        except web.HTTPClientError as refusal:
            log_event(
                logger,
                "slack.refused",
                agent=self._agent.slug,
                status=refusal.status,
                reason=refusal.text,
            )
            raise
        response = await self._bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def _on_app_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._on_event("app_mention", body, event)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._on_event("message", body, event)

    async def _on_other_event(self, event: dict[str, Any]) -> None:
        log_event(logger, "slack.event_ignored", level=logging.DEBUG, type=event.get("type"))

    async def _on_event(self, event_type: str, body: dict[str, Any], event: dict[str, Any]) -> None:
        assert self._identity is not None
        team = body.get("team_id") or event.get("team") or self._identity.team_id
        if not isinstance(team, str) or not team.isalnum():
            log_event(logger, "slack.ignored", level=logging.DEBUG, reason="malformed team")
            return
        outcome = classify(
            event_type=event_type, event=event, team=team, bot=self._identity, rules=self._rules
        )
        if isinstance(outcome, Ignored):
            log_event(
                logger,
                "slack.ignored",
                level=logging.DEBUG,
                agent=self._agent.slug,
                reason=outcome.reason,
                event_id=body.get("event_id"),
            )
            return
        try:
            if isinstance(outcome, InboundMessage):
                await self._dispatch(await self._with_names(outcome))
            else:
                await self._dispatch(outcome)
        except (InvalidMessage, UnknownAgent) as error:
            # Can never be stored: acknowledge, or Slack would redeliver it for hours.
            log_event(logger, "slack.refused", level=logging.WARNING, reason=str(error))

    async def _with_names(self, message: InboundMessage) -> InboundMessage:
        """The sender's display name and the channel's name, from cache or Slack (bounded)."""
        channel = message.reply_target["channel"]
        user = message.sender.external_id
        sender_name = self._names.cached(f"user:{user}")
        group_name = self._names.cached(f"channel:{channel}") if message.is_group else None
        # Both known (a busy conversation): no tasks and no timer.
        if sender_name is None or (message.is_group and group_name is None):
            try:
                async with asyncio.timeout(self._settings.lookup_timeout_seconds):
                    sender_name, group_name = await asyncio.gather(
                        self._user_name(user),
                        self._channel_name(channel) if message.is_group else _none(),
                    )
            except TimeoutError:
                sender_name, group_name = self._names.cached(f"user:{user}"), None
        return replace(
            message,
            sender=Sender(external_id=user, display_name=sender_name),
            group_name=group_name,
        )

    async def _user_name(self, user: str) -> str | None:
        return await self._names.name(f"user:{user}", lambda: self._fetch_user_name(user))

    async def _channel_name(self, channel: str) -> str | None:
        return await self._names.name(
            f"channel:{channel}", lambda: self._fetch_channel_name(channel)
        )

    async def _fetch_user_name(self, user: str) -> str | None:
        assert self._client is not None
        data = (await self._client.users_info(user=user))["user"]
        profile = data.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or data.get("name")
        return str(name) if name else None

    async def _fetch_channel_name(self, channel: str) -> str | None:
        assert self._client is not None
        name = (await self._client.conversations_info(channel=channel))["channel"].get("name")
        return f"#{name}" if name else None

    async def fetch_file(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile:
        """A file a message carried, from Slack's file host with the bot token
        (:mod:`channels.slack.files`)."""
        if self._http is None:
            raise FileFetchError("the Slack channel is not running")
        return await fetch_slack_file(
            session=self._http,
            token=self._settings.bot_token.get_secret_value(),
            source=source,
            allowed=allowed_origins(self._settings.api_base_url),
            max_bytes=max_bytes,
        )

    # --- outbound ----------------------------------------------------------------------------

    async def send(self, reply: Reply) -> Sequence[str]:
        if self._final is None:
            raise DeliveryError("slack channel is not running")
        return await self._final.send(reply)

    async def begin(self, draft: Draft) -> LiveReply:
        """👀 on the message answered and the thread's "is thinking…", then the live reply
        (:mod:`channels.slack.live`). Raises nothing but ``CancelledError``."""
        settings = self._settings
        if self._client is None or self._status is None or self._identity is None:
            return SlackLive(
                calls=SlackCalls(AsyncWebClient()), draft=draft, streaming="off", team=""
            )
        await self._status.on_it(
            draft, reactions=settings.status_reactions, streaming=settings.streaming
        )
        team = draft.external_conv_id.split(":")[1] if draft.external_conv_id.count(":") else ""
        return SlackLive(
            calls=SlackCalls(self._client),
            draft=draft,
            streaming=settings.streaming,
            team=team or self._identity.team_id,
        )


async def _none() -> None:
    return None
