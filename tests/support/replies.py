"""A reply as the delivery step hands it to a channel, for tests that call ``send`` directly."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.ports.events import Reply


def outgoing_reply(
    *,
    channel: str,
    external_conv_id: str,
    text: str,
    reply_target: dict[str, str],
    mentions: Mapping[str, str] | None = None,
    delivery_key: str = "d-mention-1",
    agent_slug: str = "assistant",
) -> Reply:
    """A first attempt at delivering ``text`` (message and session ids are placeholders)."""
    return Reply(
        message_id=1,
        session_id=1,
        delivery_key=delivery_key,
        agent_slug=agent_slug,
        channel=channel,
        external_conv_id=external_conv_id,
        text=text,
        reply_target=reply_target,
        in_doubt=False,
        attempt=1,
        mentions=dict(mentions or {}),
    )
