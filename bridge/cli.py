"""The ``bridge`` command: serve, migrate, token, access, workspace and export.

Every expected failure (bad config, unreachable or out-of-date database) is one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

from bridge.api.access import AccessError, approve_code, list_grants, revoke_grant
from bridge.api.tokens import TokenError, create_token, revoke_token
from bridge.app import build_app
from bridge.export.command import add_export_parser, run_export
from bridge.infra.logs import configure_logging, log_event
from bridge.server import serving
from bridge.settings import CONFIG_ENV, ConfigError, Settings, load_settings
from bridge.store.engine import create_engine, session_factory
from bridge.store.migrate import SchemaOutOfDate, current_revision, require_head, upgrade
from bridge.store.models import DEFAULT_WORKSPACE
from bridge.workspaces.command import add_workspace_parser, run_workspace_command
from bridge.workspaces.store import WorkspaceError

logger = logging.getLogger("bridge")
T = TypeVar("T")
GC_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


class CommandFailed(Exception):
    """An expected failure, printed as one line."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG, else none)")
    parser = argparse.ArgumentParser(prog="bridge", description="Chat bridge for AI agents.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="run the service")
    serve.add_argument("--host", help="override http.host")
    serve.add_argument("--port", type=int, help="override http.port")
    commands.add_parser(
        "migrate", parents=[common], help="upgrade the database to the latest schema"
    )
    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", parents=[common], help="create a token")
    create.add_argument("name")
    create.add_argument(
        "--admin", action="store_true", help="may see every session (of its workspace, if given)"
    )
    create.add_argument(
        "--workspace",
        help="its workspace (default: default; an --admin token without one is the operator)",
    )
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("name")
    access = commands.add_parser("access", help="manage pairing approvals")
    access_commands = access.add_subparsers(dest="access_command", required=True)
    approve = access_commands.add_parser(
        "approve", parents=[common], help="approve a pairing code a person got in a DM"
    )
    approve.add_argument("code")
    listing = access_commands.add_parser(
        "list", parents=[common], help="the identities approved for an agent"
    )
    listing.add_argument("agent")
    withdraw = access_commands.add_parser("revoke", parents=[common], help="revoke an approval")
    withdraw.add_argument("agent")
    withdraw.add_argument("identity")
    add_workspace_parser(commands, common)
    add_export_parser(commands, common)
    return parser


async def _with_database(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    try:
        engine = create_engine(settings.database)  # a SQLite directory is created here
    except OSError as error:
        raise _unusable(settings, error) from None
    try:
        return await work(engine)
    except (OperationalError, DBAPIError, OSError) as error:
        raise _unusable(settings, error) from None
    finally:
        await engine.dispose()


def _unusable(settings: Settings, error: Exception) -> CommandFailed:
    cause = getattr(error, "orig", None) or error
    if isinstance(cause, OSError) and cause.strerror and cause.filename:
        reason = f"{cause.strerror}: {cause.filename}"  # not "[Errno 20] ..."
    else:
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return CommandFailed(f"cannot use the database at {_safe_url(settings)}: {reason}")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database.url.get_secret_value()).render_as_string(hide_password=True)


def _migrate(settings: Settings) -> int:
    async def run(engine):  # type: ignore[no-untyped-def]
        await upgrade(engine)
        return await current_revision(engine)

    revision = asyncio.run(_with_database(settings, run))
    print(f"database {_safe_url(settings)} is at revision {revision}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    async def run(engine):  # type: ignore[no-untyped-def]
        await require_head(engine)
        sessions = session_factory(engine)
        if args.token_command == "create":
            return await create_token(
                sessions, name=args.name, admin=args.admin, workspace=args.workspace
            )
        await revoke_token(sessions, name=args.name)
        return None

    token = asyncio.run(_with_database(settings, run))
    if args.token_command == "create":
        if args.admin and args.workspace is None:
            what = f"operator token {args.name!r}"  # an admin of every workspace
        else:
            kind = "admin token" if args.admin else "token"
            what = f"{kind} {args.name!r} of workspace {args.workspace or DEFAULT_WORKSPACE!r}"
        print(f"created {what}; it is shown only once:")
        print(token)
    else:
        print(f"revoked token {args.name!r}")
    return 0


def _access(args: argparse.Namespace, settings: Settings) -> int:
    async def run(engine):  # type: ignore[no-untyped-def]
        await require_head(engine)
        sessions = session_factory(engine)
        if args.access_command == "approve":
            approved = await approve_code(sessions, args.code)
            return [f"approved {approved.identity} for {approved.agent}"]
        if args.access_command == "list":
            found = await list_grants(sessions, args.agent)
            return [
                f"{grant.identity}\t{grant.created_at.isoformat(timespec='seconds')}"
                for grant in found
            ] or [f"no identity is approved for {args.agent}"]
        await revoke_grant(sessions, args.agent, args.identity)
        return [f"revoked {args.identity} for {args.agent}"]

    for line in asyncio.run(_with_database(settings, run)):
        print(line)
    return 0


def _workspace(args: argparse.Namespace, settings: Settings) -> int:
    async def run(engine):  # type: ignore[no-untyped-def]
        await require_head(engine)
        return await run_workspace_command(args, engine)

    for line in asyncio.run(_with_database(settings, run)):
        print(line)
    return 0


def _tune_garbage_collector() -> None:
    """Everything built at start (modules, settings, compiled statements) lives as long as the
    process: frozen, the collector stops scanning it again and again; and collecting the
    youngest objects less often spares the message path most of the pauses (each message
    makes thousands of short-lived objects). Memory stays bounded (see Performance)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def _serve_until_signalled(app: web.Application, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    http = settings.http
    async with serving(app, http, host=http.host, port=http.port) as runner:
        for address in runner.addresses:
            host, port = address[0], address[1]
            log_event(logger, "http.listening", url=f"http://{host}:{port}")
        _tune_garbage_collector()
        await stop.wait()
        log_event(logger, "shutdown.started")
    log_event(logger, "shutdown.finished")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    http = settings.http.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    settings = settings.model_copy(update={"http": http})
    try:
        app = build_app(settings)  # validates every channel section before anything starts
    except ConfigError as error:
        source = args.config or os.environ.get(CONFIG_ENV)
        raise ConfigError(f"{source}: {error}" if source else str(error)) from None

    async def check(engine):  # type: ignore[no-untyped-def]
        await require_head(engine)

    asyncio.run(_with_database(settings, check))
    asyncio.run(_serve_until_signalled(app, settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "token":
            return _token(args, settings)
        if args.command == "access":
            return _access(args, settings)
        if args.command == "export":
            return run_export(args, settings, with_database=_with_database)
        if args.command == "workspace":
            return _workspace(args, settings)
        return _serve(args, settings)
    except ConfigError as error:
        print(f"bridge: config error: {error}", file=sys.stderr)
        return 2
    except (AccessError, CommandFailed, SchemaOutOfDate, TokenError, WorkspaceError) as error:
        print(f"bridge: {error}", file=sys.stderr)
        return 1
