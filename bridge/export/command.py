"""``bridge export --session ID | --workspace SLUG [--since DATE]``: JSON lines on stdout.

Kept out of ``bridge/cli.py`` (which wires it in); the database comes through the CLI's own
``with_database`` so a bad URL or an out-of-date schema reads as in every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.api.cursors import MAX_ID
from bridge.export.stream import ExportError, start_export
from bridge.settings import Settings
from bridge.store.engine import session_factory
from bridge.store.migrate import require_head

Work = Callable[[AsyncEngine], Awaitable[None]]
WithDatabase = Callable[[Settings, Work], Coroutine[Any, Any, None]]


def since_argument(raw: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 datetime (UTC unless it says otherwise)."""
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or datetime: {raw!r} (e.g. 2026-05-01 or 2026-05-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def session_argument(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
        raise argparse.ArgumentTypeError(f"not a session id: {raw!r}")
    return int(raw)


def add_export_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write sessions and their messages to stdout as JSON lines",
    )
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", type=session_argument, metavar="ID", help="one session")
    which.add_argument(
        "--workspace",
        metavar="SLUG",
        help="every session of the workspace's agents, soft-deleted ones included",
    )
    export.add_argument(
        "--since",
        type=since_argument,
        metavar="DATE",
        help="only messages created at or after this date or datetime (UTC unless given)",
    )


def run_export(
    args: argparse.Namespace,
    settings: Settings,
    *,
    with_database: WithDatabase,
    out: BinaryIO | None = None,
) -> int:
    """Writes each page as soon as it is read, so a long export starts at once and a reader
    that falls behind slows the export down instead of filling memory."""
    sink = sys.stdout.buffer if out is None else out
    outcome: list[str] = []

    async def run(engine: AsyncEngine) -> None:
        await require_head(engine)
        try:
            pages = await start_export(
                session_factory(engine),
                session_id=args.session,
                workspace=args.workspace,
                since=args.since,
            )
        except ExportError as error:
            outcome.append(str(error))
            return
        async with aclosing(pages):
            async for chunk in pages:
                try:
                    await asyncio.to_thread(_write, sink, chunk)
                except BrokenPipeError:
                    outcome.append("export stopped: the output was closed")
                    if out is None:  # else Python's final flush of stdout fails once more
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    return

    asyncio.run(with_database(settings, run))
    if outcome:
        print(f"bridge: {outcome[0]}", file=sys.stderr)
        return 1
    return 0


def _write(sink: BinaryIO, chunk: bytes) -> None:
    sink.write(chunk)
    sink.flush()
