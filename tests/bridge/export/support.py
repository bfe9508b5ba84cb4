"""Running ``bridge export`` in-process (the real parser entry and ``run_export``, with the
CLI's own database helper) and reading its JSON lines back."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, cast, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.cli import _with_database
from bridge.export.command import add_export_parser, run_export
from bridge.settings import Settings
from bridge.store.models import MESSAGES, UTCDateTime, utcnow

TWO_WORKSPACES = [
    {"slug": "assistant", "workspace": "acme", "inmemory": {}},
    {"slug": "helper", "workspace": "globex", "inmemory": {}},
]


def export_parser() -> argparse.ArgumentParser:
    """The ``export`` subcommand as ``bridge`` registers it."""
    parser = argparse.ArgumentParser(prog="bridge")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    add_export_parser(parser.add_subparsers(dest="command", required=True), common)
    return parser


@dataclass
class Exported:
    code: int
    output: bytes

    @property
    def lines(self) -> list[dict[str, Any]]:
        assert self.code == 0
        assert self.output.endswith(b"\n") or self.output == b""
        return [json.loads(line) for line in self.output.decode().splitlines()]


async def export(settings: Settings, *argv: str) -> Exported:
    args = export_parser().parse_args(["export", *argv])
    out = io.BytesIO()
    code = await asyncio.to_thread(
        run_export, args, settings, with_database=_with_database, out=out
    )
    return Exported(code=code, output=out.getvalue())


async def add_messages(
    sessions: async_sessionmaker[AsyncSession], session_id: int, count: int, *, size: int = 300
) -> None:
    """``count`` answered user messages of about ``size`` characters in one INSERT ... SELECT
    over a recursive count (no round trip per row, no bound parameter per row)."""
    numbers = select(literal(1, Integer).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select((numbers.c.n + 1).label("n")).where(numbers.c.n < count))
    now = utcnow()
    columns = {
        "session_id": literal(session_id, Integer),
        "role": literal("user"),
        "content": literal("x" * size + " #") + cast(numbers.c.n, String),
        "channel": literal("inmemory"),
        "reply_target": literal_column("'{}'"),
        "attachments": literal_column("'[]'"),
        "platform_message_ids": literal_column("'[]'"),
        "state": literal("answered"),
        "attempts": literal(0, Integer),
        "delivery_in_doubt": literal(False),
        "chain_hops": literal(0, Integer),
        "created_at": literal(now, UTCDateTime),
        "updated_at": literal(now, UTCDateTime),
    }
    async with sessions() as db, db.begin():
        await db.execute(
            MESSAGES.insert().from_select(
                list(columns), select(*columns.values()).select_from(numbers)
            )
        )
