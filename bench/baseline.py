"""The plain baseline: what a user would write instead of the bridge, measured under the same load.

A slack-bolt ``AsyncApp`` in HTTP mode with bolt's defaults: the signature is checked, the event
is acknowledged first and the listener runs after the ack (``process_before_response=False``).
For each DM it stores the message through the SQLAlchemy ORM (async engine, asyncpg), posts the
echo with ``chat.postMessage`` and stores the reply: one ORM session per message, no dedup,
nothing durable before the ack. Run it as its own process, as the bridge runs::

    python -m bench.baseline --port 0 --database-url postgresql+asyncpg://... \\
        --slack-api http://127.0.0.1:PORT/api/ --signing-secret S --bot-token xoxb-...

It logs ``baseline http.listening url=http://127.0.0.1:PORT`` on stderr once it serves
``POST /slack/events``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import ForeignKey, String, Text, func
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Reply(Base):
    __tablename__ = "replies"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    ts: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def build_app(*, engine: AsyncEngine, client: AsyncWebClient, signing_secret: str) -> AsyncApp:
    # expire_on_commit=False: the usual async setting, so message.id stays readable after commit.
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = AsyncApp(client=client, signing_secret=signing_secret)

    @app.event("message")
    async def on_message(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        async with sessions() as db:
            message = Message(
                channel=event["channel"], user=event["user"], ts=event["ts"], text=event["text"]
            )
            db.add(message)
            await db.commit()
            posted = await client.chat_postMessage(channel=event["channel"], text=event["text"])
            db.add(Reply(message_id=message.id, ts=str(posted["ts"]), text=event["text"]))
            await db.commit()

    return app


async def serve(args: argparse.Namespace) -> None:
    # Pooled like the bench's bridge (20 connections); a long checkout wait so that a burst
    # queues for a connection instead of dropping messages after the default 30 s.
    engine = create_async_engine(
        args.database_url, pool_size=args.pool_size, max_overflow=0, pool_timeout=600
    )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    http = aiohttp.ClientSession()
    client = AsyncWebClient(token=args.bot_token, base_url=args.slack_api, session=http)
    app = build_app(engine=engine, client=client, signing_secret=args.signing_secret)
    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"baseline http.listening url=http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await http.close()
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://...")
    parser.add_argument("--slack-api", required=True, help="Slack Web API base URL")
    parser.add_argument("--signing-secret", required=True)
    parser.add_argument("--bot-token", required=True)
    parser.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
