"""Replies for Discord: peer agents' ``@slug`` as native mentions, parts of at most 2,000
characters, one stable nonce per part, and what a failed send means for a retry."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import discord

from bridge.a2a.mentions import render_mentions
from bridge.ports.errors import DeliveryError
from channels.text_split import split_text

PART_LIMIT = 2000
NONCE_LENGTH = 25


def with_mentions(text: str, mentions: Mapping[str, str]) -> str:
    """``@slug`` of each agent in ``mentions`` as ``<@user_id>``, so Discord notifies that
    agent's bot; an id that is not a snowflake leaves the ``@slug`` as written."""

    def render(slug: str, user_id: str) -> str:
        return f"<@{user_id}>" if user_id.isascii() and user_id.isdigit() else f"@{slug}"

    return render_mentions(text, mentions, render)


def reply_parts(
    text: str, mentions: Mapping[str, str] | None = None, *, limit: int = PART_LIMIT
) -> list[str]:
    """The messages of one reply, at most ``limit`` characters each. Mentions are rendered
    before the split, so the parts are measured by what Discord receives (``<@id>`` is longer
    than ``@slug``)."""
    return split_text(with_mentions(text, mentions or {}), limit=limit)


def part_nonce(delivery_key: str, part: int) -> str:
    """Stable across attempts: Discord returns the message already created with this nonce
    (``enforce_nonce``) instead of posting it again."""
    return hashlib.sha256(f"{delivery_key}:{part}".encode()).hexdigest()[:NONCE_LENGTH]


def delivery_error(error: Exception) -> DeliveryError:
    if isinstance(error, discord.RateLimited):
        return DeliveryError(
            f"rate limited for {error.retry_after:.1f} s", retry_after=error.retry_after
        )
    if isinstance(error, discord.HTTPException):
        status = error.status
        message = f"HTTP {status}: {error.text or error}"
        if status == 429:
            return DeliveryError(message, retry_after=_retry_after(error))
        if status >= 500:
            # It may have been created; a retry with the same nonce does not duplicate it.
            return DeliveryError(message, in_doubt=True)
        return DeliveryError(message, permanent=True)
    # A dropped connection or a timeout: it may have gone out.
    return DeliveryError(f"{type(error).__name__}: {error}", in_doubt=True)


def _retry_after(error: discord.HTTPException) -> float | None:
    value = error.response.headers.get("Retry-After") if error.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
