"""Feishu events as InboundMessages, and the event crypto, on the shared golden payloads and
the reference's test vectors; replies' ``@slug`` mentions as ``<at>`` tags (pure: no server)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.ports.events import Attachment, InboundMessage
from channels.feishu.crypto import (
    UndecryptableEvent,
    decrypt,
    signature,
    signature_matches,
    timestamp_is_fresh,
)
from channels.feishu.inbound import (
    FeishuMessage,
    Ignored,
    MalformedEvent,
    created_at,
    read_message,
    to_inbound,
)
from channels.feishu.outbound import render_at_mentions, reply_parts
from channels.text_split import split_text

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BOT = "ou_bot0000000000000000000000000001"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _message(event: dict[str, Any]) -> FeishuMessage:
    found = read_message(event)
    assert isinstance(found, FeishuMessage)
    return found


def _inbound(message: FeishuMessage, **options: Any) -> InboundMessage | Ignored:
    defaults: dict[str, Any] = {
        "agent_slug": "assistant",
        "bot_open_id": BOT,
        "require_mention": True,
        "sender_name": "Mei",
        "group_name": "Standup",
    }
    return to_inbound(message, **(defaults | options))


def test_a_group_message_at_the_bot_loses_the_mention_and_is_a_group_session() -> None:
    found = _inbound(_message(_fixture("feishu_group_message_at_bot.json")["event"]))
    assert isinstance(found, InboundMessage)
    assert found.text == "please summarise today's standup"
    assert found.external_conv_id == "feishu:oc_5ad11d72b830411d72b836c20"
    assert found.is_group and found.group_name == "Standup"
    assert found.sender.external_id == "ou_84aad35d084aa403a838cf73ee18467"
    assert found.sender.display_name == "Mei"
    assert found.external_message_id == "om_dc13264520392913993dd051dba21dcf"
    assert found.reply_target == {
        "message_id": "om_dc13264520392913993dd051dba21dcf",
        "in_thread": "",
    }


def test_a_group_message_without_the_bot_is_ignored_unless_configured() -> None:
    event = _fixture("feishu_group_message_at_bot.json")["event"]
    event["message"]["mentions"][0]["id"]["open_id"] = "ou_someone_else"
    event["message"]["mentions"][0]["name"] = "Li"
    message = _message(event)
    assert _inbound(message) == Ignored("not mentioned")
    found = _inbound(message, require_mention=False)
    assert isinstance(found, InboundMessage)
    assert found.text == "@Li please summarise today's standup"


def test_a_p2p_message_is_always_answered() -> None:
    found = _inbound(_message(_fixture("feishu_p2p_message.json")["event"]), group_name=None)
    assert isinstance(found, InboundMessage)
    assert not found.is_group and found.group_name is None
    assert found.external_conv_id.startswith("feishu:oc_")


def test_a_topic_thread_is_its_own_session_and_follow_ups_need_no_mention() -> None:
    event = _fixture("feishu_group_message_at_bot.json")["event"]
    event["message"]["thread_id"] = "omt_1"
    found = _inbound(_message(event))
    assert isinstance(found, InboundMessage)
    assert found.external_conv_id == "feishu:oc_5ad11d72b830411d72b836c20:omt_1"
    assert found.parent_conv_id == "feishu:oc_5ad11d72b830411d72b836c20"
    assert found.reply_target["in_thread"] == "1" and not found.only_if_engaged
    follow_up = copy.deepcopy(event)
    follow_up["message"]["mentions"] = []
    follow_up["message"]["content"] = json.dumps({"text": "and tomorrow?"})
    later = _inbound(_message(follow_up))
    assert isinstance(later, InboundMessage) and later.only_if_engaged


def test_a_post_is_flattened_to_text_with_links_mentions_and_images() -> None:
    event = _fixture("feishu_p2p_message.json")["event"]
    event["message"]["message_type"] = "post"
    event["message"]["mentions"] = [
        {"key": "@_user_1", "id": {"open_id": BOT}, "name": "TestBot"},
        {"key": "@_user_2", "id": {"open_id": "ou_li"}, "name": "Li"},
    ]
    event["message"]["content"] = json.dumps(
        {
            "title": "Weekly",
            "content": [
                [{"tag": "at", "user_id": "@_user_1"}, {"tag": "text", "text": " numbers:"}],
                [
                    {"tag": "text", "text": "see "},
                    {"tag": "a", "text": "the sheet", "href": "https://x.example/s"},
                    {"tag": "text", "text": " with "},
                    {"tag": "at", "user_id": "@_user_2", "user_name": "Li"},
                ],
                [{"tag": "img", "image_key": "img_v2_1"}],
            ],
        }
    )
    found = _inbound(_message(event))
    assert isinstance(found, InboundMessage)
    assert found.text == "Weekly\nnumbers:\nsee the sheet (https://x.example/s) with @Li"
    message_id = event["message"]["message_id"]
    source = {"message_id": message_id, "file_key": "img_v2_1", "type": "image"}
    assert found.attachments == (Attachment(name="img_v2_1", source=source),)


def test_images_and_files_are_attachments_and_other_types_are_ignored() -> None:
    event = _fixture("feishu_p2p_message.json")["event"]
    event["message"]["message_type"] = "image"
    event["message"]["content"] = json.dumps({"image_key": "img_9"})
    found = _inbound(_message(event))
    assert isinstance(found, InboundMessage)
    ids = {"message_id": event["message"]["message_id"], "file_key": "img_9"}
    assert found.attachments == (Attachment(name="img_9", source={**ids, "type": "image"}),)
    event["message"]["message_type"] = "file"
    event["message"]["content"] = json.dumps({"file_key": "file_1", "file_name": "q3.pdf"})
    found = _inbound(_message(event))
    assert isinstance(found, InboundMessage) and found.attachments[0].name == "q3.pdf"
    assert found.attachments[0].mime_type == "application/pdf"
    assert found.attachments[0].source == {**ids, "file_key": "file_1", "type": "file"}
    event["message"]["message_type"] = "sticker"
    assert _inbound(_message(event)) == Ignored("message_type 'sticker'")


def test_senders_that_are_not_users_are_ignored() -> None:
    event = _fixture("feishu_p2p_message.json")["event"]
    event["sender"]["sender_type"] = "app"
    assert read_message(event) == Ignored("sender_type 'app'")


def test_the_reference_vectors_decrypt_and_sign() -> None:
    assert decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=") == "hello world"
    encrypted = (
        "AAECAwQFBgcICQoLDA0OD2ORkdfpiyOntYnjwWD+86QBTOYgCV9I7TiY47XJgOT5mYWstmBw01X5NeF586UbKqsR"
        "+yAH4dOM9ix78+l1w5GkrX45Q9HW662c64PETLeaqZpqqUr6FzdBhcHfTKs2fA=="
    )
    assert json.loads(decrypt("ek_test_key", encrypted)) == {
        "challenge": "ajls384kdjx98XX",
        "token": "vt_test_token",
        "type": "url_verification",
    }
    body = json.dumps({"encrypt": encrypted}, separators=(",", ":")).encode()
    expected = "02c055540f5941d26720112001070ff62705bdb7d8f84edb5b775bf9d6179b39"
    assert signature("1716900000", "abc123", "ek_test_key", body) == expected
    assert signature_matches(
        timestamp="1716900000",
        nonce="abc123",
        encrypt_key="ek_test_key",
        body=body,
        given=expected,
    )
    assert not signature_matches(
        timestamp="1716900000",
        nonce="abc123",
        encrypt_key="ek_test_key",
        body=body + b" ",
        given=expected,
    )


def test_a_signature_timestamp_is_fresh_within_the_window_either_way() -> None:
    now = 1_716_900_000.0
    for stamp in ("1716900000", "1716899700", "1716900300"):
        assert timestamp_is_fresh(stamp, now=now, window_seconds=300), stamp
    for stamp in ("1716899699", "1716900301", "0", "9" * 12):
        assert not timestamp_is_fresh(stamp, now=now, window_seconds=300), stamp
    # Only plain ASCII digits, and few of them: what int() would also take is refused.
    for stamp in ("", " 1716900000", "+1716900000", "1716900000.0", "١٧١٦٩٠٠٠٠٠", "9" * 13):
        assert not timestamp_is_fresh(stamp, now=now, window_seconds=10**15), stamp


def test_an_events_create_time_is_read_in_milliseconds_and_bounded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ahead = timedelta(minutes=5)
    moment = now - timedelta(hours=7)  # a retry hours later keeps its create_time
    millis = int(moment.timestamp() * 1000)
    for value in (str(millis), millis):
        assert created_at({"create_time": value}, now=now, max_ahead=ahead) == moment
    in_a_minute = str(int((now + timedelta(minutes=1)).timestamp() * 1000))
    assert created_at({"create_time": in_a_minute}, now=now, max_ahead=ahead) > now
    tomorrow = str(int((now + timedelta(days=1)).timestamp() * 1000))
    for bad in (None, "", "soon", "-1", "1.5", True, 1.5, "9" * 15, tomorrow):
        with pytest.raises(MalformedEvent):
            created_at({"create_time": bad}, now=now, max_ahead=ahead)


@pytest.mark.parametrize(
    "value", ["not base64!", "AAAA", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="]
)
def test_undecryptable_values_are_refused(value: str) -> None:
    with pytest.raises(UndecryptableEvent):
        decrypt("another key", value)


# --- outbound: @slug mentions of peer agents ---------------------------------------------------

PEER = "ou_bot0000000000000000000000000002"


def test_a_mentioned_peer_becomes_an_at_tag_named_by_its_slug() -> None:
    text = "@reviewer, look; @reviewer again. Not @stranger, ops@reviewer.io or /@reviewer"
    assert render_at_mentions(text, {"reviewer": PEER}) == (
        f'<at user_id="{PEER}">reviewer</at>, look; <at user_id="{PEER}">reviewer</at> again.'
        " Not @stranger, ops@reviewer.io or /@reviewer"
    )
    assert render_at_mentions(text, {}) == text


def test_an_id_that_would_break_the_tag_is_left_as_text() -> None:
    for bad in ('ou_x"><at user_id="all', "ou_x>", "", "ou x"):
        assert render_at_mentions("hi @reviewer", {"reviewer": bad}) == "hi @reviewer"


def test_rendered_text_survives_the_json_content_string() -> None:
    rendered = render_at_mentions('say "hi" \\ @reviewer\n', {"reviewer": PEER})
    content = json.dumps({"text": rendered}, ensure_ascii=False)  # as the client builds it
    assert json.loads(content) == {"text": rendered}
    assert f'<at user_id=\\"{PEER}\\">reviewer</at>' in content


def test_reply_parts_never_cut_inside_a_tag_and_keep_the_limit() -> None:
    text = "word " * 5 + "@reviewer done and more words here"
    mentions = {"reviewer": "ou_1234"}
    tag = '<at user_id="ou_1234">reviewer</at>'
    limit = 40
    naive = split_text(render_at_mentions(text, mentions), limit=limit)
    assert not all(tag in part or "<at" not in part for part in naive)  # the trap is real
    parts = reply_parts(text, mentions, limit=limit)
    assert all(len(part) <= limit for part in parts)
    assert sum(part.count(tag) for part in parts) == 1
    assert all("<at" not in part or tag in part for part in parts)
    assert "".join(parts) == render_at_mentions(text, mentions)
    assert "\x00" not in "".join(parts)


def test_reply_parts_without_mentions_are_the_plain_split() -> None:
    text = "\n\n".join("paragraph " + "z" * 30 for _ in range(5))
    assert reply_parts(text, {}, limit=50) == split_text(text, limit=50)
    assert reply_parts("@reviewer hi", {}, limit=50) == ["@reviewer hi"]
