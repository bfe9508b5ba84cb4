"""Each channel's pure ``post_address``: a conversation id (and thread) -> where to post, or
CannotPost. The end-to-end tests beside this one show the addresses reach the platforms."""

from __future__ import annotations

import pytest

from bridge.ports.contract import PostAddress
from bridge.ports.errors import CannotPost
from channels.discord.inbound import post_address as discord
from channels.feishu.inbound import post_address as feishu
from channels.slack.inbound import post_address as slack


def test_discord_channels_threads_and_dms_seen_before() -> None:
    assert discord(external_conv_id="discord:10:20", thread=None, last_target=None) == PostAddress(
        external_conv_id="discord:10:20",
        reply_target={"channel_id": "20", "guild_id": "10"},
        is_group=True,
    )
    assert discord(external_conv_id="discord:10:20", thread="30", last_target=None) == PostAddress(
        external_conv_id="discord:10:30",
        reply_target={"channel_id": "30", "guild_id": "10"},
        is_group=True,
        parent_conv_id="discord:10:20",
    )
    seen = {"channel_id": "555", "message_id": "777", "guild_id": ""}
    dm = discord(external_conv_id="discord:dm:42", thread=None, last_target=seen)
    assert dm.reply_target == {"channel_id": "555", "guild_id": ""}  # never a reply to 777
    for conversation, thread, last in (
        ("discord:dm:42", None, None),  # a DM's channel id comes only from a message in it
        ("discord:dm:42", "30", seen),
        ("discord:general:20", None, None),
        ("discord:10:20", "t-1", None),
        ("slack:T1:C1", None, None),
    ):
        with pytest.raises(CannotPost):
            discord(external_conv_id=conversation, thread=thread, last_target=last)


def test_feishu_chats_and_threads_it_can_reply_in() -> None:
    chat = feishu(external_conv_id="feishu:oc_1", thread=None, last_target={"message_id": "om_9"})
    assert chat.reply_target == {"chat_id": "oc_1"}
    in_thread = feishu(
        external_conv_id="feishu:oc_1:omt_5", thread=None, last_target={"message_id": "om_9"}
    )
    assert in_thread == PostAddress(
        external_conv_id="feishu:oc_1:omt_5",
        reply_target={"message_id": "om_9", "in_thread": "1"},
        is_group=True,
        parent_conv_id="feishu:oc_1",
    )
    for conversation, thread in (("feishu:oc_1", "omt_5"), ("feishu:oc_1:a:b", None), ("x", None)):
        with pytest.raises(CannotPost):
            feishu(external_conv_id=conversation, thread=thread, last_target=None)


def test_slack_names_the_conversation_as_its_inbound_messages_do() -> None:
    def address(conversation: str, thread: str | None, *, replies: bool = True) -> PostAddress:
        return slack(
            external_conv_id=conversation, thread=thread, team="T1", thread_replies=replies
        )

    assert address("slack:T1:C1", None).reply_target == {"channel": "C1", "thread_ts": ""}
    threaded = address("slack:T1:C1", "1700000000.000100")
    assert (threaded.external_conv_id, threaded.parent_conv_id) == (
        "slack:T1:C1:1700000000.000100",
        "slack:T1:C1",
    )
    flat = address("slack:T1:C1", "1700000000.000100", replies=False)
    assert (flat.external_conv_id, flat.reply_target["thread_ts"]) == (
        "slack:T1:C1",
        "1700000000.000100",
    )
    assert address("slack:T1:C1:1700000000.000100", None) == threaded
    assert not address("slack:T1:D1", None).is_group
    for conversation, thread in (
        ("slack:T2:C1", None),
        ("slack:T1:C1:1700000000.000100", "1700000000.000200"),
        ("slack:T1:c-1", None),
        ("slack:T1", None),
    ):
        with pytest.raises(CannotPost):
            address(conversation, thread)
