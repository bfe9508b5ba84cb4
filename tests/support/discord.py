"""What tests of the Discord channel share: the section for an agent, and the fixture that
puts discord.py's class-level endpoints back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import discord.gateway
import discord.http
import pytest

from tests.fakes.discord import FakeDiscord


@pytest.fixture
def restore_discord_endpoints(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The channel points discord.py's class-level endpoints at the configured server; put the
    real ones back after each test (use with ``pytest.mark.usefixtures``)."""
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )
    yield


def discord_section(fake: FakeDiscord, **extra: Any) -> dict[str, Any]:
    """An agent's ``[agents.discord]`` pointed at ``fake`` (the fake's first bot by default)."""
    return {
        "bot_token": fake.token,
        "api_base_url": fake.api_base_url,
        "gateway_url": fake.gateway_url,
        "restart_max_seconds": 1,
        **extra,
    }
