"""An agent posts first on Feishu: the bridge's own Feishu client against the strict fake Open
API (which knows which chats the bot is in), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from bridge.api.tokens import create_token
from bridge.store.models import MessageState
from tests.bridge.agents_send.test_agent_send import delivered
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import FakeFeishu
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge

IN_CHAT = "oc_news000000000001"
LEFT_CHAT = "oc_left000000000001"


@asynccontextmanager
async def feishu_bridge(
    database_url: str,
) -> AsyncIterator[tuple[FakeFeishu, RunningBridge, ApiClient]]:
    async with FakeFeishu() as fake:
        fake.add_user()
        fake.add_chat(IN_CHAT, "news")
        fake.add_chat(LEFT_CHAT, "old team", bot_member=False)
        agent = {"slug": "assistant", "feishu": feishu_section(fake)}
        async with (
            running_bridge(make_settings(database_url, agents=[agent])) as bridge,
            aiohttp.ClientSession() as http,
        ):
            token = await create_token(bridge.sessions, name="ops", admin=True, workspace="default")
            yield fake, bridge, ApiClient(http=http, base_url=bridge.url, token=token)


async def test_post_first_sends_a_new_message_to_the_chat_once(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, admin):
        body = {
            "channel": "feishu",
            "external_conv_id": f"feishu:{IN_CHAT}",
            "text": "Weekly digest",
            "client_message_id": "digest-w18",
        }
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        message = await fake.next_sent(timeout=10)
        row = await delivered(bridge, sent["id"])
        assert (message.kind, message.chat_id, message.receive_id_type) == (
            "send",
            IN_CHAT,
            "chat_id",
        )
        assert message.uuid == f"{row.delivery_key}-0"
        assert row.platform_message_ids == [message.message_id]
        assert (await admin.post("/agents/assistant/send", body)).ok(200)["id"] == sent["id"]
        assert len(fake.sent) == 1


async def test_a_chat_the_bot_left_ends_failed_with_feishus_reason(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, admin):
        body = {"channel": "feishu", "external_conv_id": f"feishu:{LEFT_CHAT}", "text": "hello?"}
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        row = await delivered(bridge, sent["id"], MessageState.FAILED)
        assert row.last_error is not None and "230002" in row.last_error
        assert fake.sent == []
        thread = {**body, "external_conv_id": f"feishu:{IN_CHAT}", "thread": "omt_1"}
        (await admin.post("/agents/assistant/send", thread)).error(422, "cannot_post")
