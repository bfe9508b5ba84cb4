"""Replayed, stale and oversized webhook requests, as an attacker sends them, through the real
server with the real channels (Feishu with the strict fake, Slack with the real slack-bolt), on
SQLite and PostgreSQL.

A signed request only proves who signed it, not when it was sent: a captured body stays valid.
Feishu's signature covers ``X-Lark-Request-Timestamp``, so a request signed more than five
minutes away from now is refused; what an in-window replay could still do (membership events)
is made idempotent and order-safe. The web path needs no window: it authenticates each request
by token, and ``client_message_id`` makes a resent message a no-op.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import aiohttp
from sqlalchemy import select

from bridge.store.models import ChatSession
from tests.channels.feishu.test_channel import feishu_bridge
from tests.channels.slack.test_channel import DM, HUMAN, SIGNING_SECRET, slack_bridge
from tests.fakes import slack
from tests.fakes.feishu import DEFAULT_ENCRYPT_KEY, encrypt, signed_headers
from tests.fakes.slack import FakeSlack
from tests.support.fuzzing import deep
from tests.support.harness import RunningBridge

FIVE_MINUTES = 300
ROOM = "oc_replay_room"


async def _deleted_at(bridge: RunningBridge, chat_id: str = ROOM) -> datetime | None:
    async with bridge.sessions() as db:
        session = (
            await db.execute(
                select(ChatSession).where(ChatSession.external_conv_id == f"feishu:{chat_id}")
            )
        ).scalar_one()
        return session.deleted_at


async def _session_count(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        return len((await db.execute(select(ChatSession.id))).all())


# --- Feishu: the signature timestamp's window -----------------------------------------------


async def test_a_feishu_event_signed_outside_five_minutes_is_refused(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        # Captured a month ago, just past the window, or from a clock ahead: each correctly
        # signed, each refused, nothing stored, nothing answered.
        for age in (30 * 24 * 3600, FIVE_MINUTES + 20, -(FIVE_MINUTES + 20)):
            event = fake.message_event(text=f"signed {age} s ago")
            pushed = await fake.push(url, event, age_seconds=age)
            assert pushed.status == 401, age
            assert "timestamp" in pushed.json()["msg"]
        # A timestamp that is no unix time in seconds, signed all the same.
        for stamp in ("", "soon", "1e9", "-5", " 1716900000", "١٧١٦٩٠٠٠٠٠", "9" * 40):
            pushed = await fake.push(url, fake.message_event(text="odd"), timestamp=stamp)
            assert pushed.status == 401, stamp
        # A membership change signed long ago changes nothing either.
        fake.add_chat(ROOM, "Replay Room")
        old_add = await fake.push(url, fake.bot_added_event(ROOM, "Replay Room"), age_seconds=3600)
        assert old_add.status == 401
        await fake.expect_nothing_sent(within=0.3)
        assert await bridge.messages() == []
        assert await _session_count(bridge) == 0

        # Inside the window, either way (clocks differ a little): stored and answered.
        for age in (FIVE_MINUTES - 60, -(FIVE_MINUTES - 60)):
            pushed = await fake.push(url, fake.message_event(text=f"{age} s off"), age_seconds=age)
            assert pushed.status == 200, age
            assert (await fake.next_sent(timeout=10)).text == f"{age} s off"


async def test_the_window_is_checked_before_the_body_is_opened(database_url: str) -> None:
    """A stale signed request is refused for its age even when its body is garbage: the
    signature and the window decide, before any decryption or parsing work."""
    async with feishu_bridge(database_url) as (fake, bridge, url):
        body = json.dumps({"encrypt": encrypt(DEFAULT_ENCRYPT_KEY, "not json")}).encode()
        stamp, nonce = str(int(time.time()) - 3600), "n-stale"
        assert (
            await fake.push_raw(url, body, signed_headers(body, timestamp=stamp, nonce=nonce))
        ).status == 401
        assert await bridge.messages() == []


# --- Feishu: membership events are idempotent and order-safe --------------------------------


async def test_a_replayed_bot_removal_never_removes_the_bot_again(database_url: str) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        fake.add_chat(ROOM, "Replay Room")
        added = await fake.push(url, fake.bot_added_event(ROOM, "Replay Room"))
        removed = await fake.push(url, fake.bot_deleted_event(ROOM))
        assert added.ok and removed.ok
        marked = await _deleted_at(bridge)
        assert marked is not None

        # The same removal again (redelivered or replayed at once): acknowledged, no change.
        assert (await fake.redeliver(url, removed)).ok
        assert await _deleted_at(bridge) == marked

        # The bot is added back; replaying the old removal must not take it out again.
        assert (await fake.push(url, fake.bot_added_event(ROOM, "Replay Room"))).ok
        assert await _deleted_at(bridge) is None
        for _ in range(3):
            replay = await fake.redeliver(url, removed)
            assert replay.ok  # acknowledged, so Feishu stops retrying it
            assert await _deleted_at(bridge) is None

        # Nor does replaying the first addition revive the session after a later removal.
        assert (await fake.push(url, fake.bot_deleted_event(ROOM))).ok
        removed_again = await _deleted_at(bridge)
        assert removed_again is not None
        assert (await fake.redeliver(url, added)).ok
        assert await _deleted_at(bridge) == removed_again


async def test_membership_events_out_of_order_keep_the_latest_state(database_url: str) -> None:
    """Feishu redelivers a failed push 15 s to 6 h later, after newer events: the event that
    happened last wins, whatever order they arrive in."""
    async with feishu_bridge(database_url) as (fake, bridge, url):
        fake.add_chat(ROOM, "Replay Room")
        first_removal = fake.bot_deleted_event(ROOM)  # happened first, arrives last
        addition = fake.bot_added_event(ROOM, "Replay Room")
        assert (await fake.push(url, addition)).ok
        assert (await fake.push(url, first_removal)).ok
        assert await _deleted_at(bridge) is None

        late_addition = fake.bot_added_event(ROOM, "Replay Room")
        removal = fake.bot_deleted_event(ROOM)
        assert (await fake.push(url, removal)).ok
        assert (await fake.push(url, late_addition)).ok  # created before the removal
        assert await _deleted_at(bridge) is not None


async def test_a_membership_event_without_a_usable_create_time_is_refused(
    database_url: str,
) -> None:
    async with feishu_bridge(database_url) as (fake, bridge, url):
        fake.add_chat(ROOM, "Replay Room")
        far_future = str(int((time.time() + 3 * 24 * 3600) * 1000))
        for create_time in (None, "", "soon", "-1", "9" * 40, far_future):
            event = fake.bot_added_event(ROOM, "Replay Room")
            if create_time is None:
                del event["header"]["create_time"]
            else:
                event["header"]["create_time"] = create_time
            assert (await fake.push(url, event)).status == 400, create_time
        assert await _session_count(bridge) == 0


# --- nested and huge JSON on the Feishu and Slack webhooks ----------------------------------


async def test_deeply_nested_or_huge_json_to_feishu_is_refused(database_url: str) -> None:
    nested = deep(100_000)
    async with feishu_bridge(database_url) as (fake, bridge, url):
        now, nonce = str(int(time.time())), "n-deep"
        sealed = json.dumps({"encrypt": encrypt(DEFAULT_ENCRYPT_KEY, nested.decode())}).encode()
        for body in (nested, b'{"encrypt":' + nested + b"}", sealed):
            assert (
                await fake.push_raw(url, body, signed_headers(body, timestamp=now, nonce=nonce))
            ).status == 400
        huge = b'{"encrypt":"' + b"A" * 2_000_000 + b'"}'
        assert (await fake.push_raw(url, huge, {"Content-Type": "application/json"})).status == 413
        assert await bridge.messages() == []
    async with feishu_bridge(database_url, encrypt_key=None) as (plain_fake, bridge, url):
        assert (await plain_fake.push_raw(url, nested, {})).status == 400
        assert await bridge.messages() == []


async def _post_signed_to_slack(url: str, body: bytes, *, age_seconds: int = 0) -> int:
    stamp = str(int(time.time()) - age_seconds)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack.sign(SIGNING_SECRET, stamp, body),
    }
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


async def test_slack_refuses_stale_nested_and_huge_requests(database_url: str) -> None:
    async with FakeSlack(bot_token="xoxb-test-bot-token", signing_secret=SIGNING_SECRET) as fake:
        fake.add_channel(DM, is_im=True, user=HUMAN)
        fake.add_user(HUMAN, "ada", "Ada")
        async with slack_bridge(database_url, fake) as (bridge, url):
            # A correctly signed event captured six minutes ago.
            event = slack.message(channel=DM, user=HUMAN, text="replayed")
            captured = json.dumps(event).encode()
            assert await _post_signed_to_slack(url, captured, age_seconds=360) == 401
            assert await _post_signed_to_slack(url, captured, age_seconds=-360) == 401
            nested = b'{"type":"event_callback","event":' + deep(100_000) + b"}"
            assert await _post_signed_to_slack(url, nested) == 400
            huge = b'{"type":"event_callback","x":"' + b"a" * 2_000_000 + b'"}'
            assert await _post_signed_to_slack(url, huge) == 413
            await fake.expect_no_post(within=0.3)
            assert await bridge.messages() == []
            # The same event signed now gets through: the refusals were about age and shape.
            assert (await fake.push_event(url, event)).status == 200
            assert (await fake.next_post(timeout=10))["text"] == "replayed"
