"""The access decision for one inbound message, from the agent's ``[agents.access]`` alone.

Pure: what the database knows (approved pairings) comes in as ``granted``, so the decision is
the same in every process and easy to test. ``deny`` always wins; then the conversation filter;
then the policy of the kind of conversation.
"""

from __future__ import annotations

from typing import Literal

from bridge.access.settings import AccessSettings

RefusalReason = Literal["denied", "conversation", "dm_off", "groups_off", "not_allowed", "pairing"]
"""Why a message was refused: the ``reason`` of ``access.refused`` and ``bridge_refused_total``."""


def identity_of(channel: str, external_id: str) -> str:
    """``{channel}:{external user id}``, as ``allow`` and ``deny`` list people."""
    return f"{channel}:{external_id}"


def in_conversations(prefixes: list[str], *conversation_ids: str | None) -> bool:
    """Whether any of the ids is one of ``prefixes`` or lies under one (a ``:`` boundary)."""
    for conversation in conversation_ids:
        if conversation is None:
            continue
        for prefix in prefixes:
            if conversation == prefix or conversation.startswith(prefix + ":"):
                return True
    return False


def needs_grants(access: AccessSettings, *, is_group: bool) -> bool:
    """Whether the decision depends on approved pairings (one query for the batch)."""
    policy = access.groups if is_group else access.dm
    return policy in ("allowlist", "pairing")


def refusal(
    access: AccessSettings,
    *,
    identity: str,
    is_group: bool,
    conversation_ids: tuple[str, str | None],
    granted: bool,
) -> RefusalReason | None:
    """Why the message must be refused, or None when the agent may answer it."""
    if identity in access.deny:
        return "denied"
    if access.conversations and not in_conversations(access.conversations, *conversation_ids):
        return "conversation"
    policy = access.groups if is_group else access.dm
    if policy == "open":
        return None
    if policy == "off":
        return "groups_off" if is_group else "dm_off"
    if identity in access.allow or granted:
        return None
    return "pairing" if policy == "pairing" else "not_allowed"


def agent_refusal(
    access: AccessSettings, *, identity: str, conversation_ids: tuple[str, str | None] | None
) -> RefusalReason | None:
    """For a message another agent sent: ``deny`` always applies, the conversation filter to
    hand-offs in a platform conversation (``conversation_ids``; None for a direct ask); the
    user policies and limits never do."""
    if identity in access.deny:
        return "denied"
    if (
        conversation_ids is not None
        and access.conversations
        and not in_conversations(access.conversations, *conversation_ids)
    ):
        return "conversation"
    return None
