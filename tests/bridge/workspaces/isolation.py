"""Two workspaces on one bridge, for the isolation tests: ``acme`` and ``globex``, each with a
user token and an admin token, plus an operator token; and what globex has, to look for in
what acme is shown and to find unchanged afterwards."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import select

from bridge.api.tokens import create_token
from bridge.settings import Settings
from bridge.store.models import (
    AGENTS,
    GRANTS,
    MESSAGES,
    PAIRING_CODES,
    SESSIONS,
    TOKENS,
    WORKSPACES,
)
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge

SECRET = "GLOBEX-SECRET-7f3a"
"""In globex's messages and session titles: it must never reach acme."""
MARKER = re.compile("globex", re.IGNORECASE)
"""globex's agent slugs, workspace slug and secret all contain it; acme's data never does."""

ACME_AGENTS: list[dict[str, Any]] = [
    {"slug": "acme-bot", "workspace": "acme", "inmemory": {}},
    {"slug": "acme-peer", "workspace": "acme", "inmemory": {}},
]
GLOBEX_AGENTS: list[dict[str, Any]] = [
    {
        "slug": "globex-bot",
        "workspace": "globex",
        "inmemory": {},
        "echo_stream_chunk_chars": 6,
        "echo_stream_delay_ms": 5,
    },
    {"slug": "globex-desk", "workspace": "globex", "inmemory": {}, "access": {"dm": "pairing"}},
]

ROLES = ("acme_user", "acme_admin", "globex_user", "globex_admin", "operator")


def two_workspace_settings(
    database_url: str, agents: list[dict[str, Any]] | None = None
) -> Settings:
    return make_settings(database_url, agents=agents or [*ACME_AGENTS, *GLOBEX_AGENTS])


@asynccontextmanager
async def two_workspaces(
    settings: Settings, *extra_users: tuple[str, str]
) -> AsyncIterator[tuple[RunningBridge, dict[str, ApiClient]]]:
    """The real bridge and a client per role (``extra_users``: more ``(name, workspace)``
    users). Tokens are made once the bridge has recorded the workspaces of its agents."""
    roles: dict[str, tuple[bool, str | None]] = {
        "acme_user": (False, "acme"),
        "acme_admin": (True, "acme"),
        "globex_user": (False, "globex"),
        "globex_admin": (True, "globex"),
        "operator": (True, None),
    }
    roles.update({name: (False, workspace) for name, workspace in extra_users})
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        clients = {}
        for name, (admin, workspace) in roles.items():
            token = await create_token(bridge.sessions, name=name, admin=admin, workspace=workspace)
            clients[name] = ApiClient(http=http, base_url=bridge.url, token=token)
        yield bridge, clients


@dataclass
class Globex:
    """What globex has: looked for in every answer acme gets."""

    session_ids: set[int] = field(default_factory=set)
    agents: tuple[str, ...] = ("globex-bot", "globex-desk")
    identity: str = ""
    """An identity approved for ``globex-desk``."""
    code: str = ""
    """A live pairing code of ``globex-desk``, not approved."""


def leaks(body: Any, globex: Globex, *, echoed: tuple[str, ...] = ()) -> list[str]:
    """What of globex's appears in ``body`` (text or parsed JSON). ``echoed``: the values
    the request itself sent, which an error may repeat (as it does for a missing object)."""
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    for value in sorted(echoed, key=len, reverse=True):
        text = text.replace(value, "<sent>")
    found = [f"text: {match.group(0)!r}" for match in MARKER.finditer(text)]
    if not isinstance(body, str):
        found += [
            f"session id {value}" for value in _session_ids(body) if value in globex.session_ids
        ]
    return found


def _session_ids(value: Any) -> list[int]:
    """Session ids as JSON values: ``session_id`` fields and the ``id`` of session objects."""
    found: list[int] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("session_id", "parent_session") and isinstance(item, int):
                found.append(item)
        if "external_conv_id" in value and isinstance(value.get("id"), int):
            found.append(value["id"])
        for item in value.values():
            found += _session_ids(item)
    elif isinstance(value, list):
        for item in value:
            found += _session_ids(item)
    return found


async def globex_state(bridge: RunningBridge) -> dict[str, Any]:
    """Everything of globex's that a request could change, to compare before and after."""
    a, s, m, g, p, w, t = (
        AGENTS.c,
        SESSIONS.c,
        MESSAGES.c,
        GRANTS.c,
        PAIRING_CODES.c,
        WORKSPACES.c,
        TOKENS.c,
    )
    workspace = select(w.id).where(w.slug == "globex").scalar_subquery()
    agents = select(a.id).where(a.workspace_id == workspace)
    sessions = select(s.id).where(s.agent_id.in_(agents))
    queries = {
        "workspace": select(w.slug, w.name, w.deleted_at).where(w.id == workspace),
        "agents": select(a.id, a.slug).where(a.workspace_id == workspace).order_by(a.id),
        "sessions": select(
            s.id, s.title, s.deleted_at, s.message_count, s.last_message_at, s.participant_id
        )
        .where(s.id.in_(sessions))
        .order_by(s.id),
        "messages": select(m.id, m.content, m.state, m.deleted_at, m.edited_at)
        .where(m.session_id.in_(sessions))
        .order_by(m.id),
        "grants": select(g.agent_id, g.identity).where(g.agent_id.in_(agents)).order_by(g.identity),
        "codes": select(p.code, p.identity).where(p.agent_id.in_(agents)).order_by(p.code),
        "tokens": select(t.name, t.revoked_at, t.is_admin)
        .where(t.workspace_id == workspace)
        .order_by(t.name),
    }
    async with bridge.sessions() as db:
        return {
            name: [tuple(row) for row in await db.execute(query)] for name, query in queries.items()
        }
