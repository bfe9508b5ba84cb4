"""The Feishu channel end to end: events pushed (encrypted and signed as Feishu does) to the
bridge's webhook, replies through the bridge's own client to a strict fake Open API, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from bridge.appkeys import CHANNELS
from bridge.store.models import ChatSession, MessageState
from channels.feishu.adapter import FeishuChannel
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import (
    DEFAULT_BOT_OPEN_ID,
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_GROUP_CHAT_ID,
    FakeFeishu,
    signed_headers,
)
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.processes import wait_until
from tests.support.replies import outgoing_reply


@asynccontextmanager
async def feishu_bridge(
    database_url: str, *, encrypt_key: str | None = DEFAULT_ENCRYPT_KEY, **fake_options: Any
) -> AsyncIterator[tuple[FakeFeishu, RunningBridge, str]]:
    async with FakeFeishu(encrypt_key=encrypt_key, **fake_options) as fake:
        fake.add_user()  # the default user, who writes the fake's events
        settings = make_settings(
            database_url, agents=[{"slug": "assistant", "feishu": feishu_section(fake)}]
        )
        async with running_bridge(settings) as bridge:
            yield fake, bridge, bridge.url + "/feishu/assistant/events"


async def _stored(bridge: RunningBridge) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in await bridge.messages()]


async def _sessions(bridge: RunningBridge) -> dict[str, ChatSession]:
    async with bridge.sessions() as db:
        found = (await db.execute(select(ChatSession))).scalars()
        return {session.external_conv_id: session for session in found}


async def test_the_url_check_is_answered_plain_and_encrypted(database_url: str) -> None:
    for encrypt_key in (None, DEFAULT_ENCRYPT_KEY):
        async with feishu_bridge(database_url, encrypt_key=encrypt_key) as (fake, bridge, url):
            answer = await fake.push(url, fake.url_verification("ch-123"))
            assert answer.status == 200 and answer.json() == {"challenge": "ch-123"}
            assert "X-Lark-Signature" not in answer.request_headers
            assert answer.elapsed < 1.0
            wrong = await fake.push(url, fake.url_verification("x"), verification_token="nope")
            assert wrong.status == 401
            assert await _stored(bridge) == []


async def test_other_peoples_mentions_are_stored_and_answered_by_name(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        fake.add_chat()  # the default group
        asked = fake.message_event(
            chat_type="group",
            text="@_user_2 what did @_user_1 say?",
            mentions=[("@_user_1", "ou_li", "Li")],
            mention_bot=True,
        )
        assert (await fake.push(url, asked)).status == 200
        sent = await fake.next_sent(timeout=10)
        assert sent.text == "what did @Li say?"
        [user] = [m for m in await bridge.messages() if m.role == "user"]
        await bridge.reply_to(user.id, state=MessageState.DELIVERED)
        assert await _stored(bridge) == [
            ("user", "what did @Li say?"),
            ("assistant", "what did @Li say?"),
        ]


async def test_a_post_is_stored_flattened(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, _bridge, url):
        post = {
            "title": "Plan",
            "content": [
                [{"tag": "text", "text": "step one"}],
                [{"tag": "a", "text": "doc", "href": "https://x.example/d"}],
            ],
        }
        assert (await fake.push(url, fake.message_event(post=post))).status == 200
        sent = await fake.next_sent(timeout=10)
        assert sent.text == "Plan\nstep one\ndoc (https://x.example/d)"


async def test_a_bad_signature_token_or_body_is_refused_with_nothing_stored(
    database_url: str,
) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        event = fake.message_event(text="forged")
        assert (await fake.push(url, event, tamper_signature=True)).status == 401
        assert (await fake.push(url, event, sign=False)).status == 401
        assert (await fake.push(url, event, verification_token="wrong")).status == 401
        undecryptable = b'{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}'
        refused = await fake.push_raw(url, undecryptable, signed_headers(undecryptable))
        assert refused.status == 400
        assert (await fake.push_raw(url, b"not json", {})).status == 400
        # A genuine event after them is the first thing answered and stored.
        assert (await fake.push(url, fake.message_event(text="genuine"))).status == 200
        assert (await fake.next_sent(timeout=10)).text == "genuine"
        assert await _stored(bridge) == [("user", "genuine"), ("assistant", "genuine")]
        assert [sent.text for sent in fake.sent] == ["genuine"]


async def test_an_expired_or_refused_token_is_fetched_again(database_url: str) -> None:
    async with feishu_bridge(database_url, token_lifetime_seconds=2) as (fake, _bridge, url):
        await fake.push(url, fake.message_event(text="first"))
        await fake.next_sent(timeout=10)
        issued = fake.tokens_issued
        await asyncio.sleep(2.1)  # the token has expired (refreshed before use, not after)
        await fake.push(url, fake.message_event(text="second"))
        assert (await fake.next_sent(timeout=10)).text == "second"
        assert fake.tokens_issued > issued
        fake.expire_all_tokens()  # Feishu says 99991663: refresh once and go on
        await fake.push(url, fake.message_event(text="third"))
        assert (await fake.next_sent(timeout=10)).text == "third"
        refused = [r for r in fake.requests if r.code == 99991663]
        assert len(refused) >= 1


async def test_being_added_to_a_group_creates_its_session_and_removal_marks_it(
    database_url: str,
) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        fake.add_chat("oc_new_group", "Launch Room")
        assert (await fake.push(url, fake.bot_added_event("oc_new_group", "Launch Room"))).ok
        session = (await _sessions(bridge))["feishu:oc_new_group"]
        assert session.is_group and session.group_name == "Launch Room"
        assert session.deleted_at is None
        assert (await fake.push(url, fake.bot_deleted_event("oc_new_group"))).ok

        async def marked() -> bool:
            return (await _sessions(bridge))["feishu:oc_new_group"].deleted_at is not None

        await wait_until(marked, within=5)
        assert await _stored(bridge) == []


async def test_a_membership_event_whose_conversation_id_is_too_long_is_refused(
    database_url: str,
) -> None:
    """A chat_id that fits but whose conversation id (``feishu:`` + it) would not is a 400
    with nothing stored, never a 500 (found by the fuzzer on PostgreSQL)."""
    chat_id = "oc_" + "7" * 252  # 255 characters: storable alone, not with the prefix
    async with feishu_bridge(database_url) as (fake, bridge, url):
        for event in (fake.bot_deleted_event(chat_id), fake.bot_added_event(chat_id, "Big")):
            assert (await fake.push(url, event)).status == 400
        assert await _sessions(bridge) == {}


REVIEWER_BOT_OPEN_ID = "ou_bot0000000000000000000000000002"


async def test_a_reply_mentions_a_peer_bot_by_the_open_id_its_channel_reports(
    database_url: str,
) -> None:
    """Two agents, each its own Feishu bot: after start each channel knows its bot's open_id
    (``mention_id``), and a reply whose ``mentions`` carry the peer's id posts ``<at>``."""
    async with (
        FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake,
        FakeFeishu(bot_open_id=REVIEWER_BOT_OPEN_ID, bot_name="Reviewer") as peer_fake,
    ):
        settings = make_settings(
            database_url,
            agents=[
                {"slug": "assistant", "feishu": feishu_section(fake)},
                {"slug": "reviewer", "feishu": feishu_section(peer_fake)},
            ],
        )
        async with running_bridge(settings) as bridge:
            assistant = bridge.app[CHANNELS].get("feishu", "assistant")
            reviewer = bridge.app[CHANNELS].get("feishu", "reviewer")
            assert isinstance(assistant, FeishuChannel) and isinstance(reviewer, FeishuChannel)
            await wait_until(
                lambda: assistant.mention_id() is not None and reviewer.mention_id() is not None,
                within=5,
                what="both bots' open_ids",
            )
            assert assistant.mention_id() == DEFAULT_BOT_OPEN_ID
            assert reviewer.mention_id() == REVIEWER_BOT_OPEN_ID
            assert assistant.status().ready and reviewer.status().ready

            event = fake.message_event(chat_type="group", text="ship it?", mention_bot=True)
            fake.remember(event)  # the message the reply answers exists at "Feishu"
            parent_id = event["event"]["message"]["message_id"]
            peer_id = reviewer.mention_id()
            assert peer_id is not None
            ids = await assistant.send(
                outgoing_reply(
                    channel="feishu",
                    external_conv_id=f"feishu:{DEFAULT_GROUP_CHAT_ID}",
                    text='@reviewer please check "the plan"; mail ops@reviewer.example',
                    reply_target={"message_id": parent_id, "in_thread": ""},
                    mentions={"reviewer": peer_id},
                    delivery_key="d-mention-1",
                )
            )
            sent = await fake.next_sent(timeout=5)
            assert ids == [sent.message_id] and sent.reply_to == parent_id
            content = sent.request.json["content"]
            assert isinstance(content, str)  # a string holding JSON, as Feishu requires
            assert sent.text == (
                f'<at user_id="{REVIEWER_BOT_OPEN_ID}">reviewer</at> please check "the plan";'
                " mail ops@reviewer.example"
            )
            assert sent.mentions == [(REVIEWER_BOT_OPEN_ID, "reviewer")]
            assert peer_fake.sent == []
