"""What the answer step works with: the claimed rows it loads, a job per message, the outcome
of asking the agent, and how a failure and the tokens spent are stored."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import FromClause, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.agents import settings_secrets
from bridge.agents.base import NO_ANSWER, AgentError, AgentRequest, UsageMeter
from bridge.files.agent_files import AGENT_FILE_COLUMNS
from bridge.infra.redact import redact
from bridge.ports.events import Attachment
from bridge.ports.live import Draft
from bridge.store.directory import AgentRecord
from bridge.store.models import ATTACHMENTS, PARTICIPANTS, SESSIONS


def load_claimed(claimed: FromClause) -> Select[Any]:
    """What answering needs of each claimed user message: it, its session and its sender."""
    m, s, p = claimed.c, SESSIONS.c, PARTICIPANTS.c
    return select(
        m.id,
        m.content,
        m.channel,
        m.reply_target,
        m.session_id,
        m.attempts,
        m.chain_origin_id,
        m.chain_hops,
        m.reply_key,
        m.live_message_ids,
        m.created_at,
        m.attachments.label("listed_files"),
        s.agent_id,
        s.external_conv_id,
        s.is_group,
        s.group_name,
        s.context_from_message_id,
        p.external_id,
        p.display_name,
        p.kind,
    ).select_from(
        claimed.join(SESSIONS, s.id == m.session_id).outerjoin(
            PARTICIPANTS, p.id == m.sender_participant_id
        )
    )


def carries_files(row: Any) -> bool:
    """The message lists files (``chat_messages.attachments``, written with its rows): only
    such messages are looked up in ``attachments``."""
    return bool(row.listed_files)


_FILES_OF = (
    select(ATTACHMENTS.c.message_id, *AGENT_FILE_COLUMNS)
    .where(ATTACHMENTS.c.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(ATTACHMENTS.c.message_id, ATTACHMENTS.c.position)
)


async def load_files(db: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[Any]]:
    """The attachment rows of these messages, in order, by message: one query on the
    ``(message_id, position)`` key, and none at all for no ids."""
    files: dict[int, list[Any]] = defaultdict(list)
    if message_ids:
        for row in await db.execute(_FILES_OF, {"ids": list(message_ids)}):
            files[row.message_id].append(row)
    return files


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    message_id: int
    agent: AgentRecord
    request: AgentRequest
    channel: str
    reply_target: dict[str, str]
    attempts: int
    chain_origin_id: int
    """The human message (or direct ask) that started this chain; the reply shares it."""
    chain_hops: int
    delivery_key: str
    """The key the reply is delivered with: the message's ``reply_key``, so a live reply
    already carries it."""
    draft: Draft | None
    """The reply as a live view sees it; None for a message stored before reply keys."""
    asked_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    text: str
    role: str
    state: str
    error: str | None = None
    reset: bool = False
    usage: UsageMeter | None = None
    """The tokens answering cost, when the backend reported them."""
    files: tuple[Attachment, ...] = ()
    """The answer's files, their contents already in the file store."""


def failure_of(error: Exception, job: Job) -> tuple[str, str]:
    """The short reason a user may see and the detail for admins and the log, redacted of
    every secret the agent's settings hold (backends already redact what they quote; this
    also covers exceptions they did not anticipate)."""
    if isinstance(error, AgentError):
        reason, detail = error.reason, str(error)
    elif isinstance(error, TimeoutError):
        reason = "the agent did not answer in time"
        detail = f"timed out after {job.agent.settings.answer_timeout_seconds:g} s"
    else:
        reason, detail = NO_ANSWER, f"{type(error).__name__}: {error}"
    return reason, redact(detail, settings_secrets(job.agent.settings))


def tokens_of(usage: UsageMeter | None) -> dict[str, int]:
    """The token columns of an answered message, when its answer reported usage."""
    if usage is None:
        return {}
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
