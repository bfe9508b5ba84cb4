"""Fixtures shared by the agent backend tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP session a backend calls its agent with."""
    async with aiohttp.ClientSession() as session:
        yield session
