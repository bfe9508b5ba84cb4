"""Run the real app in-process on 127.0.0.1:0, with settings built for one test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.app import CHANNELS, PIPELINE, SESSIONS, build_app
from bridge.flow.pipeline import Pipeline
from bridge.ports.registry import ChannelRegistry
from bridge.server import serving
from bridge.settings import Settings, load_settings
from bridge.store.models import ChatMessage
from channels.inmemory import MemoryChannel
from tests.fakes.webhook_agent import FakeWebhookAgent

WEBHOOK_SECRET = "webhook-test-secret"


def webhook_agent_config(
    fake: FakeWebhookAgent,
    *,
    timeout_seconds: float = 5.0,
    memory: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Agent ``assistant`` answered by ``fake``, on the memory channel."""
    return {
        "slug": "assistant",
        "backend": "webhook",
        "webhook": {"url": fake.url, "secret": WEBHOOK_SECRET, "timeout_seconds": timeout_seconds},
        "inmemory": memory or {},
        **extra,
    }


def make_settings(
    database_url: str,
    *,
    agents: list[dict[str, Any]] | None = None,
    pipeline: dict[str, Any] | None = None,
    a2a: dict[str, Any] | None = None,
) -> Settings:
    """Settings for a test: the given database, one echo agent on the memory channel."""
    return load_settings(
        overrides={
            "database": {"url": database_url},
            "http": {"port": 0},
            "agents": agents or [{"slug": "assistant", "inmemory": {}}],
            "pipeline": {"retry_base_seconds": 0.05, **(pipeline or {})},
            "a2a": a2a or {},
        }
    )


@dataclass
class RunningBridge:
    app: web.Application
    url: str

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.app[SESSIONS]

    @property
    def pipeline(self) -> Pipeline:
        return self.app[PIPELINE]

    def memory(self, agent: str = "assistant") -> MemoryChannel:
        channel = self.app[CHANNELS].get("inmemory", agent)
        assert isinstance(channel, MemoryChannel)
        return channel

    async def reply_to(self, message_id: int, *, state: str | None = None) -> ChatMessage:
        """The stored reply to ``message_id`` (in ``state``, if given), waiting for it."""
        for _ in range(1000):
            async with self.sessions() as db:
                reply = (
                    await db.execute(
                        select(ChatMessage).where(ChatMessage.reply_to_message_id == message_id)
                    )
                ).scalar_one_or_none()
            if reply is not None and (state is None or reply.state == state):
                return reply
            await asyncio.sleep(0.02)
        raise AssertionError(f"no reply to message {message_id} in state {state}")

    async def messages(self, session_id: int | None = None) -> list[ChatMessage]:
        query = select(ChatMessage).order_by(ChatMessage.id)
        if session_id is not None:
            query = query.where(ChatMessage.session_id == session_id)
        async with self.sessions() as db:
            return list((await db.execute(query)).scalars())


@asynccontextmanager
async def running_bridge(
    settings: Settings, *, registry: ChannelRegistry | None = None
) -> AsyncIterator[RunningBridge]:
    app = build_app(settings, registry=registry)
    async with serving(app, settings.http, host="127.0.0.1", port=0) as runner:
        host, port = runner.addresses[0][:2]
        yield RunningBridge(app=app, url=f"http://{host}:{port}")
