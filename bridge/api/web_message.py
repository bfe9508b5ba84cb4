"""A message typed in the web chat (or posted by a program) as an :class:`InboundMessage`."""

from __future__ import annotations

from bridge.ports.events import WEB_CHANNEL, Attachment, InboundMessage, Sender


def web_message(
    *,
    agent_slug: str,
    external_conv_id: str,
    user: str,
    text: str,
    message_key: str,
    attachments: tuple[Attachment, ...] = (),
) -> InboundMessage:
    """``message_key`` is the dedup key: the client's own message id makes a retried POST a
    no-op. The sender is the web user, the participant its token belongs to. ``attachments``
    are already in the file store (an upload's files)."""
    return InboundMessage(
        channel=WEB_CHANNEL,
        agent_slug=agent_slug,
        external_conv_id=external_conv_id,
        external_message_id=message_key,
        sender=Sender(external_id=user, display_name=user),
        text=text,
        attachments=attachments,
    )
