"""A small Feishu/Lark Open API client on aiohttp (the official SDK blocks the event loop).

It keeps the tenant access token, refreshing it before it expires and once more when Feishu
says it is invalid, and turns Feishu's error codes into what a retry needs to know.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
INVALID_TOKEN_CODES = frozenset({99991661, 99991663, 99991664, 99991665, 99991668})
RATE_LIMIT_CODES = frozenset({99991400, 230020, 11232})
REFRESH_EARLY_SECONDS = 600.0
MESSAGES = "/open-apis/im/v1/messages"
CARDS = "/open-apis/cardkit/v1/cards"


CHUNK_BYTES = 64 * 1024
IMAGES = "/open-apis/im/v1/images"
FILES = "/open-apis/im/v1/files"

Form = Callable[[], aiohttp.FormData]


class FeishuError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        retry_after: float | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.in_doubt = in_doubt


class TooLarge(FeishuError):
    """A download that would exceed the caller's limit; no more of it was read."""


def _failure(status: int, code: Any, msg: str, headers: Any) -> FeishuError:
    """What a refused call or download raises: rate limits with their wait, server errors as
    in doubt (the request may have been applied), the rest with Feishu's code."""
    if status == 429 or code in RATE_LIMIT_CODES:
        return FeishuError(
            f"rate limited ({code or status})", code=code, retry_after=_reset_seconds(headers)
        )
    if status >= 500:
        return FeishuError(f"HTTP {status}: {msg}", in_doubt=True)
    return FeishuError(f"Feishu error {code if code is not None else status}: {msg}", code=code)


def _reset_seconds(headers: Any) -> float | None:
    for name in ("x-ogw-ratelimit-reset", "Retry-After"):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    return None


class FeishuClient:
    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        base_url: str,
        app_id: str,
        app_secret: str,
        timeout_seconds: float,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._app_id = app_id
        self._app_secret = app_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def _tenant_token(self, *, refresh: bool) -> str:
        async with self._token_lock:
            if self._token and not refresh and time.monotonic() < self._token_expires:
                return self._token
            body = await self._post_json(
                TOKEN_PATH, {"app_id": self._app_id, "app_secret": self._app_secret}, None
            )
            if body.get("code") != 0 or not body.get("tenant_access_token"):
                raise FeishuError(
                    f"tenant token refused: {body.get('code')} {body.get('msg')}",
                    code=body.get("code"),
                )
            lifetime = float(body.get("expire", 7200))
            # Refresh ten minutes early (a quarter early for short-lived tokens).
            self._token_expires = (
                time.monotonic() + lifetime - min(REFRESH_EARLY_SECONDS, lifetime / 4)
            )
            self._token = str(body["tenant_access_token"])
            self.tokens_fetched += 1
            return self._token

    async def _post_json(
        self, path: str, payload: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        status, body, _ = await self._exchange("POST", path, token=token, payload=payload)
        if status >= 500:
            raise FeishuError(f"HTTP {status} from {path}", in_doubt=True)
        return body

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        form: Form | None = None,
    ) -> tuple[int, dict[str, Any], Any]:
        headers = {} if form is not None else {"Content-Type": "application/json; charset=utf-8"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._http.request(
                method,
                self._base + path,
                json=payload,
                data=form() if form is not None else None,
                params=params,
                headers=headers,
                timeout=self._timeout if form is None else _upload_timeout(self._timeout),
            ) as response:
                text = await response.text()
                try:
                    body = json.loads(text) if text else {}
                except ValueError:
                    body = {}
                return response.status, body if isinstance(body, dict) else {}, response.headers
        except (aiohttp.ClientError, TimeoutError) as error:
            raise FeishuError(f"{type(error).__name__}: {error}", in_doubt=True) from error

    async def call(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        form: Form | None = None,
    ) -> dict[str, Any]:
        """One Open API call; an invalid token is refreshed and the call made once more.
        ``form`` builds a multipart body (anew for each request: a body is read once)."""
        for attempt in (1, 2):
            token = await self._tenant_token(refresh=attempt == 2)
            status, body, headers = await self._exchange(
                method, path, token=token, payload=payload, params=params, form=form
            )
            code = body.get("code")
            if code in INVALID_TOKEN_CODES and attempt == 1:
                continue
            if status >= 500 or status == 429 or code != 0:
                raise _failure(status, code, str(body.get("msg", "")), headers)
            return body
        raise AssertionError("unreachable")

    async def download(
        self, path: str, *, params: dict[str, str], max_bytes: int
    ) -> tuple[bytes, str | None]:
        """A binary GET with the tenant token (refreshed once when refused): the body and its
        ``Content-Type``. Read in chunks, stopping with :class:`TooLarge` past ``max_bytes``;
        errors come as JSON, raised as for :meth:`call`. No total timeout (a large file may
        take a while; the caller bounds it), only a bound on each read."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.total, sock_read=self._timeout.total
        )
        for attempt in (1, 2):
            token = await self._tenant_token(refresh=attempt == 2)
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with self._http.get(
                    self._base + path, params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.status == 200:
                        data = await _read_capped(response, max_bytes)
                        return data, response.headers.get("Content-Type")
                    status, error_headers = response.status, response.headers
                    text = await response.content.read(CHUNK_BYTES)
            except (aiohttp.ClientError, TimeoutError) as error:
                raise FeishuError(f"{type(error).__name__}: {error}", in_doubt=True) from error
            try:
                body = json.loads(text) if text else {}
            except ValueError:
                body = {}
            code = body.get("code") if isinstance(body, dict) else None
            msg = body.get("msg", "") if isinstance(body, dict) else ""
            if code in INVALID_TOKEN_CODES and attempt == 1:
                continue
            raise _failure(status, code, str(msg), error_headers)
        raise AssertionError("unreachable")

    async def bot_open_id(self) -> str:
        body = await self.call("GET", "/open-apis/bot/v3/info")
        bot = body.get("bot")
        open_id = bot.get("open_id") if isinstance(bot, dict) else None
        if not isinstance(open_id, str) or not open_id:  # a FeishuError, like any bad answer
            raise FeishuError("bot/v3/info answered no bot.open_id")
        return open_id

    async def chat_name(self, chat_id: str) -> str | None:
        body = await self.call("GET", f"/open-apis/im/v1/chats/{quote(chat_id, safe='')}")
        name = body.get("data", {}).get("name")
        return str(name) if name else None

    async def user_name(self, open_id: str) -> str | None:
        body = await self.call(
            "GET",
            f"/open-apis/contact/v3/users/{quote(open_id, safe='')}",
            params={"user_id_type": "open_id"},
        )
        name = body.get("data", {}).get("user", {}).get("name")
        return str(name) if name else None

    async def reply(
        self,
        *,
        message_id: str,
        msg_type: str,
        content: dict[str, Any],
        in_thread: bool,
        uuid: str,
    ) -> dict[str, Any]:
        """The created message (or, for a ``uuid`` already used within the hour, the message
        that first used it: a repeat never creates a second one)."""
        payload: dict[str, Any] = {
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
            "uuid": uuid,
        }
        if in_thread:
            payload["reply_in_thread"] = True
        body = await self.call(
            "POST", f"{MESSAGES}/{quote(message_id, safe='')}/reply", payload=payload
        )
        return dict(body["data"])

    async def send(
        self, *, chat_id: str, msg_type: str, content: dict[str, Any], uuid: str
    ) -> dict[str, Any]:
        """A new message in the chat (not a reply); the same ``uuid`` within the hour returns
        the message that first used it, as :meth:`reply` does."""
        payload: dict[str, Any] = {
            "receive_id": chat_id,
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
            "uuid": uuid,
        }
        body = await self.call(
            "POST", MESSAGES, payload=payload, params={"receive_id_type": "chat_id"}
        )
        return dict(body["data"])

    async def upload_image(self, *, name: str, content_type: str, data: bytes) -> str:
        """``image_key`` of a new image (``image_type=message``: for sending). Not idempotent:
        each call stores another image."""

        def form() -> aiohttp.FormData:
            built = aiohttp.FormData()
            built.add_field("image_type", "message")
            built.add_field("image", data, filename=name, content_type=content_type)
            return built

        body = await self.call("POST", IMAGES, form=form)
        return str(body["data"]["image_key"])

    async def upload_file(
        self, *, file_type: str, name: str, content_type: str, data: bytes
    ) -> str:
        """``file_key`` of a new file (``file_type`` opus|mp4|pdf|doc|xls|ppt|stream). Not
        idempotent: each call stores another file."""

        def form() -> aiohttp.FormData:
            built = aiohttp.FormData()
            built.add_field("file_type", file_type)
            built.add_field("file_name", name)
            built.add_field("file", data, filename=name, content_type=content_type)
            return built

        body = await self.call("POST", FILES, form=form)
        return str(body["data"]["file_key"])

    async def message(self, message_id: str) -> dict[str, Any]:
        body = await self.call("GET", f"{MESSAGES}/{quote(message_id, safe='')}")
        items = body.get("data", {}).get("items") or [{}]
        return dict(items[0])

    async def delete_message(self, message_id: str) -> None:
        await self.call("DELETE", f"{MESSAGES}/{quote(message_id, safe='')}")

    async def create_card(self, card: dict[str, Any]) -> str:
        payload = {"type": "card_json", "data": json.dumps(card, ensure_ascii=False)}
        body = await self.call("POST", CARDS, payload=payload)
        return str(body["data"]["card_id"])

    async def card_text(self, card_id: str, element_id: str, text: str, sequence: int) -> None:
        """The element shows ``text`` (the whole text, never a delta)."""
        path = f"{CARDS}/{quote(card_id, safe='')}/elements/{quote(element_id, safe='')}/content"
        await self.call("PUT", path, payload={"content": text, "sequence": sequence})

    async def card_settings(self, card_id: str, config: dict[str, Any], sequence: int) -> None:
        settings = json.dumps({"config": config}, ensure_ascii=False)
        path = f"{CARDS}/{quote(card_id, safe='')}/settings"
        await self.call("PATCH", path, payload={"settings": settings, "sequence": sequence})

    async def add_reaction(self, message_id: str, emoji_type: str) -> str:
        payload = {"reaction_type": {"emoji_type": emoji_type}}
        path = f"{MESSAGES}/{quote(message_id, safe='')}/reactions"
        body = await self.call("POST", path, payload=payload)
        return str(body["data"]["reaction_id"])

    async def reactions(self, message_id: str, *, pages: int = 4) -> list[dict[str, Any]]:
        """The message's reactions (the first ``pages`` pages of 50)."""
        path = f"{MESSAGES}/{quote(message_id, safe='')}/reactions"
        found: list[dict[str, Any]] = []
        params = {"page_size": "50"}
        for _ in range(pages):
            data = (await self.call("GET", path, params=params)).get("data", {})
            found.extend(item for item in data.get("items") or [] if isinstance(item, dict))
            if not data.get("has_more") or not data.get("page_token"):
                break
            params = {"page_size": "50", "page_token": str(data["page_token"])}
        return found

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        path = f"{MESSAGES}/{quote(message_id, safe='')}/reactions/{quote(reaction_id, safe='')}"
        await self.call("DELETE", path)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or :class:`TooLarge` as soon as it (or its declared length) passes
    ``max_bytes``."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise TooLarge(f"{declared} bytes, more than the {max_bytes} allowed")
    parts: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"more than the {max_bytes} bytes allowed")
        parts.append(chunk)
    return b"".join(parts)


def _upload_timeout(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    """An upload of up to 30 MB may outlast the timeout of one small call: only the connect
    and each read are bounded (the delivery's own deadline bounds the whole)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=timeout.total, sock_read=timeout.total)
