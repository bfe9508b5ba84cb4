"""Exactly once on Feishu when a reply lands but its answer is lost: the real bridge, its own
Feishu client and the strict fake Open API (which, like Feishu, creates one message per
request ``uuid`` within an hour and answers a repeat with the message it already made), on
SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_P2P_CHAT_ID,
    FakeFeishu,
)
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.processes import wait_until

# The retry after the lost answer comes 0.5 to 1 s later: long enough to see the reply
# waiting in doubt in the database, short enough to keep the test quick.
PIPELINE = {
    "poll_interval_seconds": 0.5,
    "retry_base_seconds": 1.0,
    "send_timeout_seconds": 5.0,
}
REPLY_PATH = "/open-apis/im/v1/messages/"


async def _replies(bridge: RunningBridge) -> list[ChatMessage]:
    async with bridge.sessions() as db:
        query = select(ChatMessage).where(ChatMessage.role == "assistant").order_by(ChatMessage.id)
        return list((await db.execute(query)).scalars())


async def test_a_reply_whose_answer_is_lost_is_retried_with_its_uuid_and_lands_once(
    database_url: str,
) -> None:
    async with FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake:
        fake.add_user()
        settings = make_settings(
            database_url,
            agents=[{"slug": "assistant", "feishu": feishu_section(fake)}],
            pipeline=PIPELINE,
        )
        # The first reply is created at "Feishu", then the connection is cut before the answer.
        fake.drop_next_sends(1)
        async with running_bridge(settings) as bridge:
            url = bridge.url + "/feishu/assistant/events"
            event = fake.message_event(text="exactly once, please")
            pushed = await fake.push(url, event)
            assert pushed.status == 200 and pushed.json() == {"msg": "success"}
            parent_id = event["event"]["message"]["message_id"]

            landed = await fake.next_sent(timeout=10)
            assert landed.reply_to == parent_id and landed.text == "exactly once, please"
            assert landed.request.error == "dropped"  # the bridge never saw the answer

            async def waiting_in_doubt() -> bool:
                replies = await _replies(bridge)
                return bool(replies) and (
                    replies[0].state == MessageState.TO_DELIVER
                    and replies[0].delivery_in_doubt
                    and replies[0].attempts == 1
                )

            await wait_until(
                waiting_in_doubt, within=10, interval=0.02, what="the reply waiting in doubt"
            )

            async def delivered() -> bool:
                replies = await _replies(bridge)
                return bool(replies) and replies[0].state == MessageState.DELIVERED

            await wait_until(delivered, within=10, what="the reply delivered")
            await fake.expect_nothing_sent(within=0.5)
            replies = await _replies(bridge)
            user_message = (await bridge.messages())[0]

        # Feishu's p2p chat holds exactly one bot message for the reply: the first one.
        in_chat = [sent for sent in fake.sent if sent.chat_id == DEFAULT_P2P_CHAT_ID]
        assert [(sent.reply_to, sent.message_id) for sent in in_chat] == [
            (parent_id, landed.message_id)
        ]

        # Two reply requests, both with the uuid derived from the reply's delivery key; the
        # second was answered with the message the first had created.
        (reply,) = replies
        assert reply.delivery_key
        posts = [r for r in fake.requests_to("POST", REPLY_PATH) if r.path.endswith("/reply")]
        assert [post.json["uuid"] for post in posts] == [f"{reply.delivery_key}-0"] * 2
        assert [post.error for post in posts] == ["dropped", None]
        assert posts[1].status == 200
        assert posts[1].response["data"]["message_id"] == landed.message_id
        assert fake.uuid_hits == [
            {
                "uuid": f"{reply.delivery_key}-0",
                "message_id": landed.message_id,
                "path": posts[1].path,
            }
        ]

        # The database records one reply, delivered once, on the second attempt, as the
        # message that landed the first time.
        assert reply.reply_to_message_id == user_message.id
        assert user_message.state == MessageState.ANSWERED
        assert reply.state == MessageState.DELIVERED
        assert reply.attempts == 2
        assert not reply.delivery_in_doubt
        assert reply.platform_message_ids == [landed.message_id]
        assert reply.delivered_at is not None
