"""Which Discord messages the agent answers, and in which session (pure rules)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.ports.events import Attachment, InboundMessage
from channels.discord.inbound import Ignored, SeenMessage, classify, without_bot_mention
from channels.discord.outbound import PART_LIMIT, part_nonce, reply_parts, with_mentions

BOT = "1100000000000000001"
GUILD_MESSAGE = SeenMessage(
    message_id="1573464562202574849",
    channel_id="1300000000000000002",
    kind="text",
    author_id="1200000000000000002",
    author_name="Alice",
    author_is_bot=False,
    content=f"<@{BOT}> what's the weather in Berlin?",
    mentions_bot=True,
    guild_id="1300000000000000001",
    guild_name="Weather Fans",
    channel_name="general",
)


def _classify(seen: SeenMessage, *, require_mention: bool = True) -> InboundMessage | Ignored:
    return classify(seen, agent_slug="assistant", bot_id=BOT, require_mention=require_mention)


def test_a_mention_in_a_guild_channel_is_a_group_session_without_the_mention() -> None:
    found = _classify(GUILD_MESSAGE)
    assert isinstance(found, InboundMessage)
    assert found.external_conv_id == "discord:1300000000000000001:1300000000000000002"
    assert found.text == "what's the weather in Berlin?"
    assert found.is_group and found.group_name == "#general in Weather Fans"
    assert found.external_message_id == "1573464562202574849"
    assert found.sender.display_name == "Alice"
    assert found.reply_target == {
        "channel_id": "1300000000000000002",
        "message_id": "1573464562202574849",
        "guild_id": "1300000000000000001",
    }
    assert not found.only_if_engaged


def test_a_channel_message_without_a_mention_is_ignored_unless_configured() -> None:
    plain = replace(GUILD_MESSAGE, content="just chatting", mentions_bot=False)
    assert _classify(plain) == Ignored("not mentioned")
    found = _classify(plain, require_mention=False)
    assert isinstance(found, InboundMessage) and found.text == "just chatting"


def test_a_dm_is_always_answered_in_the_users_dm_session() -> None:
    dm = replace(GUILD_MESSAGE, kind="dm", guild_id=None, content="hi", mentions_bot=False)
    found = _classify(dm)
    assert isinstance(found, InboundMessage)
    assert found.external_conv_id == "discord:dm:1200000000000000002"
    assert not found.is_group and found.reply_target["guild_id"] == ""


def test_a_thread_is_its_own_session_under_its_channel() -> None:
    thread = replace(
        GUILD_MESSAGE,
        kind="thread",
        channel_id="1400",
        channel_name="weekend plans",
        parent_channel_id="1300000000000000002",
        parent_channel_name="general",
    )
    found = _classify(thread)
    assert isinstance(found, InboundMessage)
    assert found.external_conv_id == "discord:1300000000000000001:1400"
    assert found.parent_conv_id == "discord:1300000000000000001:1300000000000000002"
    assert found.title == "weekend plans" and found.group_name == "#general in Weather Fans"
    assert not found.only_if_engaged
    follow_up = _classify(replace(thread, content="and sunday?", mentions_bot=False))
    assert isinstance(follow_up, InboundMessage) and follow_up.only_if_engaged


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"author_is_bot": True}, "bot author"),
        ({"author_id": BOT}, "own message"),
        ({"content": f"<@!{BOT}>  "}, "no text"),
    ],
)
def test_bots_itself_and_empty_messages_are_ignored(change: dict[str, object], reason: str) -> None:
    assert _classify(replace(GUILD_MESSAGE, **change)) == Ignored(reason)  # type: ignore[arg-type]


def test_an_attachment_alone_is_a_message() -> None:
    picture = Attachment(name="cat.png", mime_type="image/png", size=10, url="https://cdn/cat.png")
    found = _classify(replace(GUILD_MESSAGE, content=f"<@{BOT}>", attachments=(picture,)))
    assert isinstance(found, InboundMessage) and found.attachments == (picture,)


def test_mentions_of_the_bot_in_both_forms_are_removed() -> None:
    assert without_bot_mention(f"<@{BOT}> a <@!{BOT}> b <@42>", BOT) == "a  b <@42>"


def test_replies_split_at_2000_characters_with_a_stable_nonce_per_part() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(100))
    parts = reply_parts(text)
    assert len(parts) > 1 and all(len(p) <= PART_LIMIT for p in parts)
    assert "\n".join(parts) == text
    nonces = {part_nonce("k" * 24, i) for i in range(len(parts))}
    assert len(nonces) == len(parts) and all(len(n) <= 25 for n in nonces)
    assert part_nonce("k" * 24, 0) == part_nonce("k" * 24, 0)


PEER = "1100000000000000002"


def test_peer_agents_are_rendered_as_native_mentions_and_nothing_else_is() -> None:
    text = "ask @helper (or @helper-2), not @nobody, me@helper.example or @helper's twin"
    rendered = with_mentions(text, {"helper": PEER, "helper-2": "not-a-snowflake"})
    assert rendered == (
        f"ask <@{PEER}> (or @helper-2), not @nobody, me@helper.example or <@{PEER}>'s twin"
    )
    assert with_mentions(text, {}) == text


def test_mentions_are_rendered_before_the_split() -> None:
    text = "x" * (PART_LIMIT - 10) + " @helper"  # fits as written, not once rendered
    parts = reply_parts(text, {"helper": PEER})
    assert [p.strip() for p in parts] == ["x" * (PART_LIMIT - 10), f"<@{PEER}>"]
    assert reply_parts(text) == [text]
