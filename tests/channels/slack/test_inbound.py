"""The pure Slack event classification: conversation ids and what is answered or ignored."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.ports.events import InboundMessage, MessageEdit
from channels.slack.inbound import BotIdentity, Ignored, Rules, classify
from tests.fakes import slack

BOT = BotIdentity(user_id="U0BOT00001", bot_id="B0BOT00001", team_id="T1")
RULES = Rules(agent_slug="assistant", require_mention=True, thread_replies=True)


def run(body: dict[str, Any], rules: Rules = RULES) -> InboundMessage | MessageEdit | Ignored:
    event = body["event"]
    return classify(event_type=event["type"], event=event, team="T1", bot=BOT, rules=rules)


@pytest.mark.parametrize(
    "subtype", ["channel_join", "thread_broadcast", "message_replied", "me_message"]
)
def test_other_subtypes_are_ignored(subtype: str) -> None:
    body = slack.message(channel="D1", user="U1", text="x")
    body["event"]["subtype"] = subtype
    assert run(body) == Ignored(reason=f"subtype {subtype}")


def test_file_share_is_answered_with_its_attachments() -> None:
    body = slack.message(channel="D1", user="U1", text="see file")
    body["event"]["subtype"] = "file_share"
    body["event"]["files"] = [
        {
            "id": "F1",
            "name": "report.pdf",
            "mimetype": "application/pdf",
            "size": 1234,
            "url_private": "https://files.slack.com/F1",
        }
    ]
    message = run(body)
    assert isinstance(message, InboundMessage)
    assert [(a.name, a.mime_type, a.size) for a in message.attachments] == [
        ("report.pdf", "application/pdf", 1234)
    ]


def test_conversation_ids_follow_the_documented_formats() -> None:
    dm = run(slack.message(channel="D1", user="U1", text="hi"))
    top = run(slack.app_mention(channel="C1", user="U1", text="<@U0BOT00001> hi", ts="100.1"))
    reply = run(slack.message(channel="C1", user="U1", text="more", thread_ts="100.1", ts="100.2"))
    flat_rules = Rules(agent_slug="assistant", require_mention=True, thread_replies=False)
    flat = run(slack.app_mention(channel="C1", user="U1", text="<@U0BOT00001> x"), flat_rules)
    assert isinstance(dm, InboundMessage) and dm.external_conv_id == "slack:T1:D1"
    assert isinstance(top, InboundMessage)
    assert (top.external_conv_id, top.parent_conv_id) == ("slack:T1:C1:100.1", "slack:T1:C1")
    assert (
        top.reply_target
        == {"channel": "C1", "thread_ts": "100.1", "message_ts": "100.1", "user": "U1"}
        and top.text == "hi"
    )
    assert isinstance(reply, InboundMessage) and reply.only_if_engaged
    assert reply.external_conv_id == "slack:T1:C1:100.1"
    assert isinstance(flat, InboundMessage) and flat.external_conv_id == "slack:T1:C1"


def test_edit_of_a_thread_reply_points_at_the_thread_session() -> None:
    body = slack.message_changed(channel="C1", ts="100.2", text="fixed", previous_text="fxied")
    body["event"]["message"]["thread_ts"] = "100.1"
    edit = run(body)
    assert isinstance(edit, MessageEdit)
    assert (edit.external_conv_id, edit.external_message_id, edit.text) == (
        "slack:T1:C1:100.1",
        "100.2",
        "fixed",
    )
