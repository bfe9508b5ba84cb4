"""Reading one figure off a running bridge's ``/metrics``."""

from __future__ import annotations

import aiohttp

from tests.support.harness import RunningBridge


async def metric(bridge: RunningBridge, line_start: str) -> float:
    """The value of the first sample line starting with ``line_start`` (0 when none)."""
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
