"""Access policies and rate limits on Slack, Discord and Feishu (issue 16): each test starts the
real bridge with the agent's ``[agents.access]`` / ``[agents.limits]`` against the platform's
strict fake (``contract_drivers``), on SQLite and PostgreSQL, and checks what the platform got
and what the database kept. A refused message must leave no participant, session or message:
only its count in ``refusals``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.access.gate import pairing_text
from bridge.access.store import approve
from bridge.store.models import (
    AccessGrant,
    Agent,
    ChatMessage,
    ChatSession,
    MessageState,
    Participant,
    Refusal,
    utcnow,
)
from tests.channels.contract_drivers import PLATFORMS, Driver, Post, Said, driver_for
from tests.support.discord import restore_discord_endpoints  # noqa: F401
from tests.support.harness import RunningBridge

pytestmark = [
    pytest.mark.usefixtures("restore_discord_endpoints"),
    pytest.mark.parametrize("platform", PLATFORMS),
]

DENIED = "Sorry, this assistant is for the team only."
LIMITED = "Slow down a little, please."
CODE = re.compile(r"\b[A-Z2-9]{8}\b")

RefusalKey = tuple[str, str, str]
"""(identity, external_conv_id, reason)"""


@asynccontextmanager
async def started(platform: str, database_url: str, **agent: Any) -> AsyncIterator[Driver]:
    """The fake and the bridge, the agent configured with ``agent`` (access, limits)."""
    driver = driver_for(platform)
    async with driver.bridge(database_url, **agent):
        yield driver


async def answered(driver: Driver, said: Said, text: str) -> Post:
    """The next post is the echo agent's answer to ``said``."""
    post = await driver.next_post()
    assert (post.text, post.place) == (text, said.place)
    driver.assert_answers(post, said)
    return post


async def refusals(bridge: RunningBridge) -> dict[RefusalKey, int]:
    async with bridge.sessions() as db:
        rows = await db.execute(
            select(
                Refusal.identity, Refusal.external_conv_id, Refusal.reason, func.sum(Refusal.count)
            ).group_by(Refusal.identity, Refusal.external_conv_id, Refusal.reason)
        )
        return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


async def refused(bridge: RunningBridge, expected: dict[RefusalKey, int]) -> None:
    """Wait until the bridge has counted exactly these refusals (so it has taken, and turned
    down, those messages); fail if it counts others."""
    seen: dict[RefusalKey, int] = {}
    for _ in range(500):
        seen = await refusals(bridge)
        if seen == expected:
            return
        assert all(seen.get(key, 0) <= expected.get(key, 0) for key in seen), seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"refusals {seen}, expected {expected}")


async def assert_nothing_stored_of(
    driver: Driver, user: str, saids: list[Said], conversations: list[str]
) -> None:
    """No participant for ``user``, no session for ``conversations``, no row for ``saids``."""
    said_ids = [said.message_id for said in saids]
    async with driver.running.sessions() as db:
        people = await db.execute(select(Participant).where(Participant.external_id == user))
        sessions = await db.execute(
            select(ChatSession).where(ChatSession.external_conv_id.in_(conversations))
        )
        messages = await db.execute(
            select(ChatMessage).where(ChatMessage.external_message_id.in_(said_ids))
        )
        assert people.scalars().all() == []
        assert sessions.scalars().all() == []
        assert messages.scalars().all() == []


async def stored(bridge: RunningBridge) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in await bridge.messages()]


async def settled_user_messages(bridge: RunningBridge, count: int) -> list[ChatMessage]:
    """Wait for ``count`` user messages, each answered or limited."""
    done = (MessageState.ANSWERED, MessageState.LIMITED)
    users: list[ChatMessage] = []
    for _ in range(500):
        users = [m for m in await bridge.messages() if m.role == "user"]
        if len(users) == count and all(m.state in done for m in users):
            return users
        await asyncio.sleep(0.02)
    raise AssertionError(f"user messages {[(m.content, m.state) for m in users]}")


async def test_an_allowlisted_dm_is_answered_and_another_refused_with_one_notice_a_day(
    platform: str, database_url: str
) -> None:
    driver = driver_for(platform)
    access = {"dm": "allowlist", "allow": [driver.identity()], "denied_text": DENIED}
    stranger = driver.other_id
    async with driver.bridge(database_url, access=access) as bridge:
        mine = await driver.user_says_in_dm("hello from a colleague")
        await answered(driver, mine, "hello from a colleague")

        theirs = [await driver.user_says_in_dm("let me in", user=stranger)]
        notice = await driver.next_post()
        assert (notice.text, notice.place) == (DENIED, theirs[0].place)
        theirs.append(await driver.user_says_in_dm("please?", user=stranger))
        dm = driver.dm_conversation(theirs[0]).external_conv_id
        await refused(bridge, {(driver.identity(stranger), dm, "not_allowed"): 2})
        later = await driver.user_says_in_dm("still there?")
        await answered(driver, later, "still there?")

        await assert_nothing_stored_of(driver, stranger, theirs, [dm])
        assert await stored(bridge) == [
            ("user", "hello from a colleague"),
            ("assistant", "hello from a colleague"),
            ("user", "still there?"),
            ("assistant", "still there?"),
        ]
    # Stopped: any notice under way has been sent. The stranger was told once, not twice.
    assert [p.text for p in driver.posts()] == ["hello from a colleague", DENIED, "still there?"]


async def test_groups_off_ignores_a_mention_in_a_group_and_answers_a_dm(
    platform: str, database_url: str
) -> None:
    async with started(platform, database_url, access={"groups": "off"}) as driver:
        bridge = driver.running
        mention = await driver.user_says_in_group("anyone here?", mention=True)
        group = driver.group_conversation(mention).external_conv_id
        await refused(bridge, {(driver.identity(), group, "groups_off"): 1})
        said = await driver.user_says_in_dm("and in private?")
        await answered(driver, said, "and in private?")

        assert await stored(bridge) == [
            ("user", "and in private?"),
            ("assistant", "and in private?"),
        ]
        async with bridge.sessions() as db:
            sessions = (await db.execute(select(ChatSession.external_conv_id))).scalars().all()
        assert sessions == [driver.dm_conversation(said).external_conv_id]
    assert [p.text for p in driver.posts()] == ["and in private?"]


async def test_deny_wins_over_allow(platform: str, database_url: str) -> None:
    driver = driver_for(platform)
    me = driver.identity()
    access = {"dm": "allowlist", "allow": [me], "deny": [me], "denied_text": DENIED}
    async with driver.bridge(database_url, access=access) as bridge:
        dm = await driver.user_says_in_dm("it's me")
        notice = await driver.next_post()
        assert (notice.text, notice.place) == (DENIED, dm.place)
        # Groups are open, but not to a denied person; the other person is answered there.
        mention = await driver.user_says_in_group("me again", mention=True)
        other = await driver.user_says_in_group("and me", mention=True, user=driver.other_id)
        await answered(driver, other, "and me")

        dm_id = driver.dm_conversation(dm).external_conv_id
        group_id = driver.group_conversation(mention).external_conv_id
        await refused(bridge, {(me, dm_id, "denied"): 1, (me, group_id, "denied"): 1})
        await assert_nothing_stored_of(driver, driver.human_id, [dm, mention], [dm_id])
        assert await stored(bridge) == [("user", "and me"), ("assistant", "and me")]
    assert [p.text for p in driver.posts()] == [DENIED, "and me"]


async def test_a_conversation_filter_answers_only_in_the_listed_group(
    platform: str, database_url: str
) -> None:
    driver = driver_for(platform)
    allowed = driver.group_id()
    async with driver.bridge(database_url, access={"conversations": [allowed]}) as bridge:
        elsewhere = await driver.user_says_in_group("over here?", mention=True, other_group=True)
        here = await driver.user_says_in_group("in the team room", mention=True)
        await answered(driver, here, "in the team room")

        outside = driver.group_conversation(elsewhere)
        assert allowed not in (outside.external_conv_id, outside.parent_conv_id)
        await refused(bridge, {(driver.identity(), outside.external_conv_id, "conversation"): 1})
        inside = driver.group_conversation(here)
        assert allowed in (inside.external_conv_id, inside.parent_conv_id)
        async with bridge.sessions() as db:
            sessions = (await db.execute(select(ChatSession.external_conv_id))).scalars().all()
        assert inside.external_conv_id in sessions
        assert outside.external_conv_id not in sessions
        assert await stored(bridge) == [
            ("user", "in the team room"),
            ("assistant", "in the team room"),
        ]
    assert [p.text for p in driver.posts()] == ["in the team room"]


async def test_pairing_from_the_first_dm_to_approval_to_an_answer(
    platform: str, database_url: str
) -> None:
    async with started(platform, database_url, access={"dm": "pairing"}) as driver:
        bridge = driver.running
        first = await driver.user_says_in_dm("hi, who are you?")
        post = await driver.next_post()
        assert post.place == first.place
        [code] = CODE.findall(post.text)
        assert post.text == pairing_text(code)
        second = await driver.user_says_in_dm("hello??")
        dm = driver.dm_conversation(first).external_conv_id
        await refused(bridge, {(driver.identity(), dm, "pairing"): 2})
        await assert_nothing_stored_of(driver, driver.human_id, [first, second], [dm])

        async with bridge.sessions() as db:
            agent_id, identity = await approve(db, code=code, now=utcnow())
            await db.commit()
        assert identity == driver.identity()
        async with bridge.sessions() as db:
            grants = (await db.execute(select(AccessGrant.agent_id, AccessGrant.identity))).all()
            assistant = await db.scalar(select(Agent.id).where(Agent.slug == "assistant"))
        assert (
            [tuple(grant) for grant in grants] == [(assistant, identity)] == [(agent_id, identity)]
        )

        said = await driver.user_says_in_dm("approved now?")
        await answered(driver, said, "approved now?")
        assert await stored(bridge) == [("user", "approved now?"), ("assistant", "approved now?")]
    assert [p.text for p in driver.posts()] == [pairing_text(code), "approved now?"]


async def test_three_messages_an_hour_give_three_answers_and_one_note_for_five(
    platform: str, database_url: str
) -> None:
    limits = {"user_messages_per_hour": 3, "limited_text": LIMITED}
    async with started(platform, database_url, limits=limits) as driver:
        bridge = driver.running
        texts = [f"message {n}" for n in range(1, 6)]
        saids = [await driver.user_says_in_dm(text) for text in texts]
        posts = [await driver.next_post() for _ in range(4)]
        assert sorted(p.text for p in posts) == sorted([LIMITED, *texts[:3]])
        assert {p.place for p in posts} == {saids[0].place}

        users = await settled_user_messages(bridge, len(texts))
        assert sorted(m.content for m in users) == sorted(texts)
        limited = [m for m in users if m.state == MessageState.LIMITED]
        assert len(limited) == 2
        assert all(m.last_error and "user_messages_per_hour" in m.last_error for m in limited)
        for message in users:
            if message.state != MessageState.LIMITED:
                reply = await bridge.reply_to(message.id, state=MessageState.DELIVERED)
                assert (reply.role, reply.content) == ("assistant", message.content)
        [note] = [m for m in await bridge.messages() if m.role == "system"]
        assert note.content == LIMITED
        assert note.reply_to_message_id in {m.id for m in limited}
        await bridge.reply_to(note.reply_to_message_id, state=MessageState.DELIVERED)
        answers = {m.reply_to_message_id for m in await bridge.messages() if m.role != "user"}
        assert len(answers) == 4  # three answers and the note; the other limited one: nothing

        # Another person is not limited by the first one's count.
        other = await driver.user_says_in_dm("my turn", user=driver.other_id)
        await answered(driver, other, "my turn")
    assert sorted(p.text for p in driver.posts()) == sorted([LIMITED, *texts[:3], "my turn"])
