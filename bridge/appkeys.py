"""The keys of the app's shared resources, in one module that the app and its routes import."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridge.agents import AgentBackend
from bridge.files.links import FileLinks
from bridge.files.store import FileStore
from bridge.flow.pipeline import Pipeline
from bridge.infra.metrics import Metrics
from bridge.ports.registry import RunningChannels
from bridge.settings import Settings
from bridge.store.directory import AgentDirectory

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CHANNELS = web.AppKey("channels", RunningChannels)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
AGENTS = web.AppKey("agents", AgentDirectory)
BACKENDS: web.AppKey[Mapping[str, AgentBackend]] = web.AppKey("backends")
PIPELINE = web.AppKey("pipeline", Pipeline)
FILES: web.AppKey[FileStore] = web.AppKey("files")
FILE_LINKS = web.AppKey("file_links", FileLinks)
