"""``build_app(settings)``: the aiohttp application with every resource in ``cleanup_ctx``.

Nothing starts at import time or in ``build_app``; engines, clients, workers and channels start
when the app starts and stop, in reverse order, when it stops: channels first (no new intake),
then the pipeline (in-flight work finished or handed back), then clients and the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from sqlalchemy import text

from bridge.agents import build_backend
from bridge.api import setup_api
from bridge.api.headers import add_security_headers
from bridge.appkeys import (
    AGENTS,
    BACKENDS,
    CHANNELS,
    ENGINE,
    FILE_LINKS,
    FILES,
    METRICS,
    PIPELINE,
    SESSIONS,
    SETTINGS,
)
from bridge.files.agent_files import AgentFiles
from bridge.files.factory import check_storage, open_file_store
from bridge.files.fetch import FileFetcher
from bridge.files.links import FileLinks, load_link_key, public_base_url
from bridge.flow.claims import count_queued
from bridge.flow.pipeline import Pipeline
from bridge.infra.metrics import Metrics
from bridge.ports.registry import ChannelRegistry, RunningChannels, configured_channels
from bridge.retention.job import RetentionJob
from bridge.settings import Settings
from bridge.store.directory import sync_agents
from bridge.store.engine import create_engine, session_factory
from bridge.store.migrate import require_head
from bridge.store.models import MessageState
from bridge.webhooks import add_webhook_routes

logger = logging.getLogger(__name__)


WAITING_STATES = (
    MessageState.PENDING,
    MessageState.ANSWERING,
    MessageState.TO_DELIVER,
    MessageState.DELIVERING,
)


def build_app(settings: Settings, *, registry: ChannelRegistry | None = None) -> web.Application:
    """The whole service as one app. Raises ConfigError for a bad channel section."""
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app.on_response_prepare.append(add_security_headers)
    check_storage(settings.storage)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[CHANNELS] = RunningChannels(
        configured=configured_channels(settings, registry or ChannelRegistry())
    )
    app.cleanup_ctx.extend([_database, _files, _agents, _pipeline_and_channels, _retention])
    setup_api(app)
    add_webhook_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].database)
    try:
        await require_head(engine)
        app[ENGINE] = engine
        app[SESSIONS] = session_factory(engine)
        yield
    finally:
        await engine.dispose()


async def _files(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[FILE_LINKS] = FileLinks(  # the signed links' key, shared by every process
        key=await load_link_key(app[SESSIONS]),
        base_url=public_base_url(settings.http),
        ttl_seconds=settings.files.link_ttl_seconds,
    )
    store = await open_file_store(settings.storage)
    app[FILES] = store
    try:
        yield
    finally:
        await store.close()


async def _agents(app: web.Application) -> AsyncIterator[None]:
    app[AGENTS] = await sync_agents(app[SESSIONS], app[SETTINGS].agents)
    async with aiohttp.ClientSession() as http:
        backends = {
            agent.slug: build_backend(agent, http=http, files=app[SETTINGS].files)
            for agent in app[SETTINGS].agents
        }
        app[BACKENDS] = backends
        try:
            yield
        finally:
            for backend in backends.values():
                await backend.aclose()


async def _pipeline_and_channels(app: web.Application) -> AsyncIterator[None]:
    """The pipeline, then the channels it dispatches to: each channel is created with the
    running pipeline's ``dispatch`` and started once the workers run. On the way down the
    pipeline stops first (in-flight replies still need their channel; whatever arrives
    meanwhile is stored or refused unacknowledged, so nothing is lost), then the channels."""
    channels = app[CHANNELS]
    pipeline = Pipeline(
        settings=app[SETTINGS],
        engine=app[ENGINE],
        sessions=app[SESSIONS],
        agents=app[AGENTS],
        backends=app[BACKENDS],
        channels=channels,
        metrics=app[METRICS],
        files=AgentFiles(
            store=app[FILES],
            links=app[FILE_LINKS],
            model_content_types=app[SETTINGS].files.model_content_types,
            fetcher=FileFetcher(
                sessions=app[SESSIONS],
                channels=channels,
                store=app[FILES],
                settings=app[SETTINGS].files,
                metrics=app[METRICS],
            ),
        ),
    )
    app[PIPELINE] = pipeline
    channels.create_all(dispatch=pipeline.dispatch)
    await pipeline.start()
    try:
        await channels.start_all()
        yield
    finally:
        await pipeline.stop()
        await channels.stop_all()


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """The retention job (one process at a time holds its lease); stops first."""
    job = RetentionJob(
        settings=app[SETTINGS].retention,
        store=app[PIPELINE].store,
        metrics=app[METRICS],
        holder=app[PIPELINE].worker_id,
    )
    job.start()
    try:
        yield
    finally:
        await job.stop()


async def healthz(_request: web.Request) -> web.Response:
    """The process is up; says nothing about its dependencies (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    database = "ok"
    try:
        async with asyncio.timeout(2):
            async with app[ENGINE].connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as error:
        database = f"unreachable: {type(error).__name__}"
    channels = {
        key: {"ready": status.ready, "detail": status.detail}
        for key, status in app[CHANNELS].statuses().items()
    }
    ready = database == "ok" and all(c["ready"] for c in channels.values())
    body = {"status": "ready" if ready else "not ready", "database": database, "channels": channels}
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    try:
        async with asyncio.timeout(2), app[SESSIONS]() as db:
            counts = await count_queued(db)
        for state in WAITING_STATES:
            app[METRICS].pending.labels(state).set(counts.get(state, 0))
    except Exception as error:  # still serve the counters when the database is away
        logger.warning("metrics: pending work unknown: %s", type(error).__name__)
    return web.Response(
        body=app[METRICS].render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )
