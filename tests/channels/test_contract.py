"""What every chat channel promises, once, for Slack, Discord and Feishu: each scenario drives
the real bridge (real client library, SQLite and PostgreSQL) against the platform's strict
fake through a driver from ``contract_drivers``. Platform-only behaviour stays in
``tests/channels/<platform>/test_channel.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from bridge.store.models import ChatMessage, ChatSession, MessageState, Participant
from tests.channels.contract_drivers import (
    PLATFORMS,
    Conversation,
    Driver,
    driver_for,
)
from tests.support.discord import restore_discord_endpoints  # noqa: F401
from tests.support.harness import RunningBridge

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")

NO_FEISHU_EDITS = pytest.param(
    "feishu",
    marks=pytest.mark.skip(
        reason="the Feishu channel subscribes to no edit or recall events (nothing to record)"
    ),
)


@pytest.fixture
async def driver(platform: str, database_url: str) -> AsyncIterator[Driver]:
    """The platform's fake and the bridge, running."""
    driver = driver_for(platform)
    async with driver.bridge(database_url):
        yield driver


async def _stored(bridge: RunningBridge) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in await bridge.messages()]


async def _user_messages(bridge: RunningBridge) -> list[ChatMessage]:
    return [m for m in await bridge.messages() if m.role == "user"]


async def _session(bridge: RunningBridge, external_conv_id: str) -> ChatSession:
    async with bridge.sessions() as db:
        found = await db.execute(
            select(ChatSession).where(ChatSession.external_conv_id == external_conv_id)
        )
        return found.scalar_one()


async def _assert_session(bridge: RunningBridge, expected: Conversation) -> ChatSession:
    session = await _session(bridge, expected.external_conv_id)
    assert session.is_group == (expected.group_name is not None)
    assert session.group_name == expected.group_name
    if expected.parent_conv_id is None:
        assert session.parent_session_id is None
    else:
        parent = await _session(bridge, expected.parent_conv_id)
        assert session.parent_session_id == parent.id
    return session


async def _answered_later(driver: Driver, text: str) -> None:
    """A later DM is the next thing answered: nothing queued before it was posted."""
    await driver.user_says_in_dm(text)
    assert (await driver.next_post()).text == text


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_dm_is_answered_in_the_dm(driver: Driver) -> None:
    said = await driver.user_says_in_dm("hello in private")
    post = await driver.next_post()
    assert (post.place, post.text) == (said.place, "hello in private")
    driver.assert_answers(post, said)
    session = await _assert_session(driver.running, driver.dm_conversation(said))
    [user] = await _user_messages(driver.running)
    assert user.session_id == session.id and user.external_message_id == said.message_id
    async with driver.running.sessions() as db:
        sender = await db.get(Participant, user.sender_participant_id)
    assert sender is not None
    assert (sender.external_id, sender.display_name) == (driver.human_id, driver.human_name)
    reply = await driver.running.reply_to(user.id, state=MessageState.DELIVERED)
    assert reply.platform_message_ids == [post.id]
    [user] = await _user_messages(driver.running)
    assert user.state == MessageState.ANSWERED


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_mention_in_a_group_is_answered_there_and_a_plain_message_is_not(
    driver: Driver,
) -> None:
    await driver.user_says_in_group("nobody asked you", mention=False)
    said = await driver.user_says_in_group("what's the weather in Berlin?", mention=True)
    post = await driver.next_post()
    assert (post.place, post.text) == (said.place, "what's the weather in Berlin?")
    driver.assert_answers(post, said)
    await _answered_later(driver, "and now?")
    assert await _stored(driver.running) == [
        ("user", "what's the weather in Berlin?"),
        ("assistant", "what's the weather in Berlin?"),
        ("user", "and now?"),
        ("assistant", "and now?"),
    ]
    await _assert_session(driver.running, driver.group_conversation(said))


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_thread_the_bot_answered_in_needs_no_mention_and_others_are_ignored(
    driver: Driver,
) -> None:
    thread = driver.new_thread()
    await driver.user_says_in_group("anyone?", mention=False, thread=thread)
    first = await driver.user_says_in_group("first", mention=True, thread=thread)
    post = await driver.next_post()
    assert (post.place, post.text) == (first.place, "first")
    driver.assert_answers(post, first)
    follow = await driver.user_says_in_group("follow-up", mention=False, thread=thread)
    post = await driver.next_post()
    assert (post.place, post.text) == (follow.place, "follow-up")
    driver.assert_answers(post, follow)
    await _answered_later(driver, "elsewhere")
    assert [text for _, text in await _stored(driver.running)] == [
        "first",
        "first",
        "follow-up",
        "follow-up",
        "elsewhere",
        "elsewhere",
    ]
    await _assert_session(driver.running, driver.thread_conversation(thread))


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_bots_are_ignored_own_and_others(driver: Driver) -> None:
    await driver.bots_say("beep")
    await _answered_later(driver, "a human")
    assert await _stored(driver.running) == [("user", "a human"), ("assistant", "a human")]
    assert [p.text for p in driver.posts()] == ["a human"]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_redelivered_message_is_answered_once(driver: Driver) -> None:
    said = await driver.user_says_in_dm("only once please")
    assert (await driver.next_post()).text == "only once please"
    [user] = await _user_messages(driver.running)
    await driver.running.reply_to(user.id, state=MessageState.DELIVERED)
    await driver.redeliver(said)
    await _answered_later(driver, "after")
    assert await _stored(driver.running) == [
        ("user", "only once please"),
        ("assistant", "only once please"),
        ("user", "after"),
        ("assistant", "after"),
    ]
    assert [p.text for p in driver.posts()] == ["only once please", "after"]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_long_reply_is_split_into_parts_below_the_limit(driver: Driver) -> None:
    text = driver.long_text()
    assert len(text) > 2 * driver.part_limit
    said = await driver.user_says_in_group(text, mention=True)
    parts = [await driver.next_post() for _ in range(3)]
    assert all(len(p.text) <= driver.part_limit for p in parts)
    assert all(p.place == said.place for p in parts)
    assert driver.part_joiner.join(p.text for p in parts) == text.strip()
    driver.assert_parts_address(parts, said)
    [user] = await _user_messages(driver.running)
    reply = await driver.running.reply_to(user.id, state=MessageState.DELIVERED)
    # Delivered with exactly these parts, and nothing else posted.
    assert reply.platform_message_ids == [p.id for p in parts]
    assert [p.id for p in driver.posts()] == [p.id for p in parts]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_rate_limit_is_waited_out_and_the_reply_posted_once(driver: Driver) -> None:
    driver.fail_next_post(status=429, retry_after=1)
    said = await driver.user_says_in_dm("patience")
    post = await driver.next_post()
    assert post.text == "patience"
    [user] = await _user_messages(driver.running)
    assert user.external_message_id == said.message_id
    reply = await driver.running.reply_to(user.id, state=MessageState.DELIVERED)
    assert reply.platform_message_ids == [post.id]
    assert reply.attempts == driver.attempts_after_a_rate_limit
    assert driver.post_statuses() == [driver.rate_limited_status, 200]
    assert [p.id for p in driver.posts()] == [post.id]


@pytest.mark.parametrize("platform", ["slack", "discord", NO_FEISHU_EDITS])
async def test_an_edit_and_a_delete_are_recorded_on_the_stored_message(
    driver: Driver,
) -> None:
    said = await driver.user_says_in_dm("tyop")
    await driver.next_post()
    [user] = await _user_messages(driver.running)
    await driver.running.reply_to(user.id, state=MessageState.DELIVERED)
    await driver.user_edits(said, "typo")
    await _answered_later(driver, "after the edit")
    stored = (await _user_messages(driver.running))[0]
    assert stored.content == "typo" and stored.edited_at is not None
    assert stored.deleted_at is None
    await driver.user_deletes(said)
    await _answered_later(driver, "after the delete")
    stored = (await _user_messages(driver.running))[0]
    assert stored.deleted_at is not None
    # Neither the edit nor the delete is answered.
    assert [p.text for p in driver.posts()] == ["tyop", "after the edit", "after the delete"]
