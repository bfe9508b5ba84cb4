"""Reply -> message arguments, and Slack's answers -> delivery errors. Pure.

Slack has no idempotency key, so every part of a reply carries the bridge's delivery key in its
message ``metadata``; a delivery that may already have landed is looked up by it first.
Another agent's ``@slug`` in the text becomes a native ``<@U…>`` mention, which is what makes
Slack notify that agent's bot (``app_mention``).

A part is sent as a ``markdown`` block (Slack renders standard Markdown there) with its
mrkdwn rendering as ``text``, the fallback notifications and old clients show.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError

from bridge.a2a.mentions import render_mentions
from bridge.ports.errors import DeliveryError
from channels.slack.mrkdwn import to_mrkdwn
from channels.text_split import split_text

PART_LIMIT = 3900
METADATA_EVENT = "bridge_delivery"
FALLBACK_LIMIT = 4000
"""``chat.update`` refuses a longer ``text`` (``msg_too_long``); the block holds the whole part."""
NATIVE_MENTION = re.compile(r"<@[UW][A-Z0-9]+>")

# ok:false errors that no retry can fix.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "restricted_action",
        "invalid_blocks",
        "invalid_metadata_format",
        "thread_not_found",
        "team_access_not_granted",
    }
)


def reply_text(text: str, mentions: Mapping[str, str]) -> str:
    """``text`` with each mentioned agent's ``@slug`` as ``<@user_id>``: plain ``@slug`` is
    just text to Slack and would reach no one. Done before splitting, so no mention is cut."""
    return render_mentions(text, mentions, lambda _slug, user_id: f"<@{user_id}>")


def reply_parts(
    text: str, mentions: Mapping[str, str] | None = None, *, limit: int = PART_LIMIT
) -> list[str]:
    """The messages of one reply, at most ``limit`` characters each. Mentions are rendered
    before the split, so no mention is cut; an empty text is still one (empty) part."""
    rendered = reply_text(text, mentions or {})
    return split_text(rendered, limit=limit) or [rendered]


def fallback_text(part: str) -> str:
    """``part`` as mrkdwn, at most :data:`FALLBACK_LIMIT` characters. Native mentions
    (``<@U…>``) are kept as they are: escaped, they would notify no one."""
    mentions: list[str] = []

    def hold(match: re.Match[str]) -> str:
        mentions.append(match.group(0))
        return f"{marker}{len(mentions) - 1}x"

    marker = f"slackmention{secrets.token_hex(6)}n"
    text = to_mrkdwn(NATIVE_MENTION.sub(hold, part))
    if mentions:
        text = re.sub(marker + r"(\d+)x", lambda m: mentions[int(m.group(1))], text)
    if len(text) <= FALLBACK_LIMIT:
        return text
    cut = text[: FALLBACK_LIMIT - 1]
    # Never end inside an entity (&amp;) or a <link|label>: Slack would show it broken.
    cut = re.sub(r"(&[a-z]*|<[^>]*)$", "", cut)
    return cut + "…"


def message_arguments(part: str) -> dict[str, Any]:
    """What a post or an edit of one part says: the Markdown block and its fallback."""
    return {"text": fallback_text(part), "blocks": [{"type": "markdown", "text": part}]}


def delivery_metadata(delivery_key: str, part: int) -> dict[str, Any]:
    """The metadata that lets an in-doubt delivery find this part again."""
    return {
        "event_type": METADATA_EVENT,
        "event_payload": {"delivery_id": delivery_key, "part": part},
    }


def post_arguments(
    *, channel: str, thread_ts: str | None, text: str, delivery_key: str, part: int
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "channel": channel,
        **message_arguments(text),
        "metadata": delivery_metadata(delivery_key, part),
    }
    if thread_ts:
        arguments["thread_ts"] = thread_ts
    return arguments


def history_query(reply_target: Mapping[str, str]) -> dict[str, Any]:
    """The arguments of the in-doubt look-up's history (or replies) calls: every message with
    its metadata, from the asked message on (a reply is never older)."""
    query: dict[str, Any] = {
        "channel": reply_target["channel"],
        "include_all_metadata": True,
        "limit": 200,
    }
    if reply_target.get("message_ts"):
        query["oldest"] = reply_target["message_ts"]
    return query


def posted_parts(
    messages: Iterable[Mapping[str, Any]], *, bot_id: str, delivery_key: str
) -> dict[int, str]:
    """Which parts of this delivery are already in the conversation: part -> message ts."""
    found: dict[int, str] = {}
    for message in messages:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if (
            message.get("bot_id") == bot_id
            and metadata.get("event_type") == METADATA_EVENT
            and payload.get("delivery_id") == delivery_key
        ):
            found[int(payload.get("part", 0))] = str(message["ts"])
    return found


def delivery_error(
    *,
    status: int,
    error: str | None,
    retry_after: str | None,
    posted_before: bool,
    method: str = "chat.postMessage",
) -> DeliveryError:
    """Map a failed call to the pipeline's terms.

    A 429 is retried by the pipeline after ``Retry-After`` (slack_sdk's own retries are off, so
    there is exactly one retry mechanism). A 5xx may have been applied by Slack: in doubt.
    ``posted_before``: earlier parts of this reply went out, so the next attempt must look first.
    """
    code = error or f"HTTP {status}"
    message = f"slack {method}: {code}"
    if status == 429 or code == "ratelimited":
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return DeliveryError(message, retry_after=seconds, in_doubt=posted_before)
    if status >= 500:
        return DeliveryError(message, in_doubt=True)
    return DeliveryError(message, permanent=code in PERMANENT_ERRORS, in_doubt=posted_before)


def api_error(
    error: SlackApiError, *, posted_before: bool, method: str = "chat.postMessage"
) -> DeliveryError:
    """:func:`delivery_error` for the Web API's failed answer."""
    return delivery_error(
        status=error.response.status_code,
        error=error.response.get("error"),
        retry_after=error.response.headers.get("Retry-After"),
        posted_before=posted_before,
        method=method,
    )


def error_code(error: SlackApiError) -> str:
    """Slack's error string of a failed call (``ratelimited`` for a 429)."""
    if error.response.status_code == 429:
        return "ratelimited"
    return str(error.response.get("error") or f"HTTP {error.response.status_code}")
