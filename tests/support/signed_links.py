"""What the platform tests of signed file links share: a bridge whose ``http.public_url`` is
its own address (so the links it gives agents open), and the checks a link must pass: the
exact bytes without a token, 403 once one character of the signature changes, 410 once a
genuine link (signed with the key kept in ``service_secrets``) has expired."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge.app import build_app
from bridge.files.links import FileLinks, load_link_key
from bridge.files.settings import FilesSettings, StorageSettings
from bridge.server import make_runner
from bridge.settings import Settings
from tests.support.harness import RunningBridge

__all__ = ["bridge_with_links", "check_signed_link", "fetch"]


@asynccontextmanager
async def bridge_with_links(settings: Settings, store: Path) -> AsyncIterator[RunningBridge]:
    """The bridge on a socket bound before it starts, ``http.public_url`` naming it, files
    kept under ``store``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = settings.model_copy(
        update={
            "storage": StorageSettings(path=str(store)),
            "files": FilesSettings(),
            "http": settings.http.model_copy(update={"public_url": url}),
        }
    )
    app = build_app(settings)
    runner = make_runner(app, settings.http)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield RunningBridge(app=app, url=url)
    finally:
        await runner.cleanup()


async def fetch(url: str) -> tuple[int, bytes]:
    """GET without any credential."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read()


async def check_signed_link(
    bridge: RunningBridge, given: dict[str, Any], *, name: str, data: bytes
) -> None:
    """``given`` is one item of the webhook body's ``attachments``: it names the file, its
    link opens to exactly ``data``, a tampered link is 403 and an expired one 410."""
    file_id = given["id"]
    assert (given["name"], given["size"], given["reason"]) == (name, len(data), None)
    url = given["url"]
    assert url.startswith(f"{bridge.url}/api/v1/files/{file_id}/signed?expires="), url
    assert (await fetch(url)) == (200, data)

    sig = url[-64:]
    tampered = url[:-64] + ("0" if sig[0] != "0" else "1") + sig[1:]
    status, body = await fetch(tampered)
    assert status == 403 and data not in body

    # A genuine link, signed with the key the database keeps, whose time has passed.
    links = FileLinks(key=await load_link_key(bridge.sessions), base_url=bridge.url, ttl_seconds=1)
    past = int(time.time()) - 5
    status, body = await fetch(bridge.url + links.path(file_id, expires=past))
    assert status == 410 and data not in body
    # The same key with a future expiry opens it: the 410 was the expiry, not the key.
    assert (await fetch(links.url(file_id))) == (200, data)
