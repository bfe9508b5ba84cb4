"""Long memory in the answer step: before an agent with ``memory.summarize`` answers, the
messages its history window dropped since the last fold are folded into the session's
summary, and the summary goes to the backend ahead of the window.

A fold is incremental: the model sees the summary so far and only the newly dropped messages
(bounded: :data:`MAX_FOLD_MESSAGES`, :data:`MAX_FOLD_CHARS`; the rest folds next time), never
the whole history again. It runs after the claim's transaction has committed, reads in one
short transaction, calls the model with none open, and writes conditionally
(:func:`bridge.memory.store.store_summary`). Whatever goes wrong (the model, a timeout, the
database, a reset or another fold first) is logged as ``memory.fold_failed`` and counted; the
answer then goes ahead with the summary as it was, or none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.agents import settings_secrets
from bridge.agents.base import AgentBackend, AgentError, AgentRequest, UsageMeter
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.infra.redact import redact
from bridge.memory.prompt import cut_summary, fold_messages
from bridge.memory.store import (
    Dropped,
    Remembered,
    dropped_messages,
    read_memory,
    store_summary,
    whole_positions,
)
from bridge.settings import AgentSettings
from bridge.store.models import utcnow

logger = logging.getLogger(__name__)

MAX_FOLD_MESSAGES = 200
"""Messages one fold takes at most; a backlog (summarize turned on for a long session) folds
over the next answers."""
MAX_FOLD_CHARS = 60_000
"""Characters of message text one fold takes at most (the first message is always taken)."""


@runtime_checkable
class Completer(Protocol):
    """A backend that can run a plain completion for the bridge (the openai backend)."""

    async def complete(self, messages: Sequence[dict[str, str]], *, usage: UsageMeter) -> str: ...


class FoldFailed(Exception):
    """Why a fold stored nothing; ``outcome`` labels the metric."""

    def __init__(self, reason: str, *, outcome: str = "failed") -> None:
        super().__init__(reason)
        self.outcome = outcome


class Memory:
    """Folds and recalls the summaries of the agents that keep one."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        backends: Mapping[str, AgentBackend],
        metrics: Metrics,
    ) -> None:
        self._sessions = sessions
        self._backends = backends
        self._metrics = metrics

    async def recall(self, agent: AgentSettings, request: AgentRequest) -> str | None:
        """The summary to send with ``request`` (None: none yet), folded up to the window
        first. Never raises: a failed fold leaves the summary as it was."""
        remembered: Remembered | None = None
        try:
            async with self._sessions() as db:
                remembered = await read_memory(db, request.session_id)
                if remembered is None or not _has_window(agent):
                    return None if remembered is None else remembered.summary
                rows = await dropped_messages(
                    db,
                    session_id=request.session_id,
                    before_message_id=request.message_id,
                    remembered=remembered,
                    window_size=len(request.history),
                    limit=MAX_FOLD_MESSAGES + 1,
                )
            if not rows:
                return remembered.summary
            return await self._fold(agent, request, remembered, rows)
        except FoldFailed as failed:
            self._failed(agent, request, str(failed), failed.outcome)
        except TimeoutError:
            reason = f"the model did not answer within {agent.answer_timeout_seconds:g} s"
            self._failed(agent, request, reason, "failed")
        except AgentError as error:  # already redacted by the backend
            self._failed(agent, request, str(error), "failed")
        except SQLAlchemyError as error:
            self._failed(agent, request, f"database: {type(error).__name__}", "failed")
        except Exception as error:
            detail = redact(f"{type(error).__name__}: {error}", settings_secrets(agent))
            self._failed(agent, request, detail, "failed")
        return None if remembered is None else remembered.summary

    async def _fold(
        self,
        agent: AgentSettings,
        request: AgentRequest,
        remembered: Remembered,
        rows: Sequence[Dropped],
    ) -> str:
        backend = self._backends.get(agent.slug)
        if not isinstance(backend, Completer):
            raise FoldFailed(f"the {agent.backend} backend cannot summarize")
        taken = whole_positions(rows, max_messages=MAX_FOLD_MESSAGES, max_chars=MAX_FOLD_CHARS)
        limit = agent.memory.max_summary_chars
        messages = fold_messages(
            previous=remembered.summary, dropped=taken, agent_name=agent.name, max_chars=limit
        )
        async with asyncio.timeout(agent.answer_timeout_seconds):
            text = await backend.complete(messages, usage=request.usage)
        summary = cut_summary(text, limit)
        through = taken[-1].position
        async with self._sessions() as db, db.begin():
            stored = await store_summary(
                db,
                session_id=request.session_id,
                remembered=remembered,
                summary=summary,
                through=through,
                now=utcnow(),
            )
        if not stored:
            raise FoldFailed("a reset or another fold changed the summary first", outcome="lost")
        self._metrics.memory_folds.labels(agent.slug, "folded").inc()
        self._metrics.memory_folded_messages.labels(agent.slug).inc(len(taken))
        log_event(
            logger,
            "memory.folded",
            agent=agent.slug,
            session=request.session_id,
            message=request.message_id,
            folded=len(taken),
            through=through,
            chars=len(summary),
        )
        return summary

    def _failed(
        self, agent: AgentSettings, request: AgentRequest, reason: str, outcome: str
    ) -> None:
        self._metrics.memory_folds.labels(agent.slug, outcome).inc()
        log_event(
            logger,
            "memory.fold_failed",
            level=logging.WARNING,
            agent=agent.slug,
            session=request.session_id,
            message=request.message_id,
            outcome=outcome,
            reason=reason,
        )


def _has_window(agent: AgentSettings) -> bool:
    """Without a window nothing is dropped from it, so nothing is folded."""
    return agent.history_messages > 0 and agent.history_chars > 0
