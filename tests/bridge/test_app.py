"""/healthz, /readyz and /metrics on the running app."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from pydantic import BaseModel

from bridge.ports.contract import Capabilities, ChannelContext, ChannelPlugin, ChannelStatus
from bridge.ports.events import Reply
from bridge.ports.registry import ChannelRegistry
from channels.inmemory import plugin as memory_plugin
from tests.support.harness import make_settings, running_bridge


class BrokenChannel:
    name = "broken"

    async def start(self) -> None:
        raise RuntimeError("invalid token: check agents[0].broken.token")

    async def stop(self) -> None:
        return None

    async def send(self, reply: Reply) -> Sequence[str]:
        raise AssertionError("never started")

    def status(self) -> ChannelStatus:
        return ChannelStatus(ready=True)

    def mention_id(self) -> str | None:
        return None


class NoSettings(BaseModel):
    pass


def broken_channel(*, context: ChannelContext[NoSettings]) -> BrokenChannel:
    return BrokenChannel()


broken_plugin = ChannelPlugin(
    name="broken", settings_model=NoSettings, capabilities=Capabilities(), create=broken_channel
)


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_health_and_readiness(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        assert await get_json(f"{bridge.url}/healthz") == (200, {"status": "ok"})
        status, body = await get_json(f"{bridge.url}/readyz")
        assert status == 200
        assert body["database"] == "ok"
        assert body["channels"] == {
            "agent/assistant": {"ready": True, "detail": ""},
            "inmemory/assistant": {"ready": True, "detail": ""},
            "web/assistant": {"ready": True, "detail": ""},
        }


async def test_readiness_reports_a_channel_that_did_not_start(database_url: str) -> None:
    settings = make_settings(
        database_url, agents=[{"slug": "assistant", "inmemory": {}, "broken": {}}]
    )
    registry = ChannelRegistry(plugins={"inmemory": memory_plugin, "broken": broken_plugin})
    async with running_bridge(settings, registry=registry) as bridge:
        status, body = await get_json(f"{bridge.url}/readyz")
        assert status == 503
        channels = body["channels"]
        assert isinstance(channels, dict)
        assert channels["inmemory/assistant"]["ready"] is True
        assert channels["broken/assistant"]["ready"] is False
        assert "invalid token" in channels["broken/assistant"]["detail"]
        # The other channel keeps working.
        await bridge.memory().receive("still here")
        assert (await bridge.memory().next_sent()).text == "still here"


async def test_metrics_count_the_flow(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        memory = bridge.memory()
        result = await memory.receive("count me", message_id="x1")
        await memory.receive("count me", message_id="x1")
        await memory.next_sent()
        await bridge.reply_to(result.message_id, state="delivered")
        async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    for line in (
        'bridge_messages_ingested_total{channel="inmemory"} 1.0',
        'bridge_duplicates_dropped_total{channel="inmemory"} 1.0',
        'bridge_messages_answered_total{channel="inmemory"} 1.0',
        'bridge_messages_delivered_total{channel="inmemory"} 1.0',
        'bridge_ingest_to_delivery_seconds_count{channel="inmemory"} 1.0',
        'bridge_pending_work{state="pending"} 0.0',
    ):
        assert line in text, line
