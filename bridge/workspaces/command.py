"""``bridge workspace create | list | delete | restore``: the operator's commands, on the same
operations as the ``/api/v1/workspaces`` routes. ``bridge.cli`` wires them in."""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.engine import session_factory
from bridge.store.messages import MessageStore
from bridge.store.wakeups import WorkSignals
from bridge.workspaces.store import (
    WorkspaceInfo,
    create_workspace,
    delete_workspace,
    list_workspaces,
    restore_workspace,
)


def add_workspace_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    workspace = commands.add_parser("workspace", help="manage workspaces (tenants)")
    actions = workspace.add_subparsers(dest="workspace_command", required=True)
    create = actions.add_parser("create", parents=[common], help="create a workspace")
    create.add_argument("slug")
    create.add_argument("--name", help="a display name (default: the slug)")
    actions.add_parser("list", parents=[common], help="every workspace, deleted ones too")
    delete = actions.add_parser(
        "delete", parents=[common], help="hide its sessions and revoke its tokens (reversible)"
    )
    delete.add_argument("slug")
    restore = actions.add_parser(
        "restore", parents=[common], help="bring back what its delete took"
    )
    restore.add_argument("slug")


def describe(info: WorkspaceInfo) -> str:
    """One line of ``bridge workspace list``: tab-separated, a deleted one says since when."""
    fields = [info.slug, info.name, f"{info.agents} agents", f"{info.active_tokens} active tokens"]
    if info.deleted_at is not None:
        fields.append(f"deleted {info.deleted_at.isoformat(timespec='seconds')}")
    return "\t".join(fields)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


async def run_workspace_command(args: argparse.Namespace, engine: AsyncEngine) -> list[str]:
    """What the command prints, one string a line; failures raise ``WorkspaceError``."""
    sessions = session_factory(engine)
    if args.workspace_command == "create":
        info = await create_workspace(sessions, slug=args.slug, name=args.name)
        return [f"created workspace {info.slug!r} ({info.name})"]
    if args.workspace_command == "list":
        return [describe(info) for info in await list_workspaces(sessions)] or ["no workspace"]
    store = MessageStore(sessions=sessions, signals=WorkSignals())
    if args.workspace_command == "delete":
        change = await delete_workspace(store, args.slug)
        return [
            f"deleted workspace {args.slug!r}: {_plural(change.sessions, 'session')} hidden,"
            f" {_plural(change.tokens, 'token')} revoked"
        ]
    change = await restore_workspace(store, args.slug)
    return [
        f"restored workspace {args.slug!r}: {_plural(change.sessions, 'session')} and"
        f" {_plural(change.tokens, 'token')} back"
    ]
