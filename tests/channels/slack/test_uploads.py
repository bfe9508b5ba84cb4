"""A reply's files uploaded natively to Slack, exactly once: the real slack_sdk in the Slack
channel against the strict fake's external upload flow (getUploadURLExternal, the bytes,
completeUploadExternal). Replies are built here as the delivery step hands them over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from bridge.appkeys import CHANNELS
from bridge.ports.contract import Channel
from bridge.ports.errors import DeliveryError
from bridge.ports.events import InboundMessage, OutgoingFile, Reply
from bridge.settings import AgentSettings
from bridge.store.models import MessageState
from channels.slack import plugin
from channels.slack.settings import SlackChannelSettings
from tests.channels.contract_drivers import SLACK_BOT_TOKEN as BOT_TOKEN
from tests.channels.contract_drivers import SLACK_CHANNEL as CHANNEL
from tests.channels.contract_drivers import SLACK_DM as DM
from tests.channels.contract_drivers import SLACK_HUMAN as HUMAN
from tests.channels.contract_drivers import SLACK_SIGNING_SECRET as SIGNING_SECRET
from tests.channels.contract_drivers import SLACK_TEAM as TEAM
from tests.channels.contract_drivers import slack_section
from tests.fakes import slack
from tests.fakes.slack import UPLOAD_METHOD, FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.harness import (
    WEBHOOK_SECRET,
    RunningBridge,
    make_settings,
    running_bridge,
    webhook_agent_config,
)
from tests.support.processes import wait_until
from tests.support.replies import outgoing_reply

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
REPORT = b"%PDF-1.7 quarterly numbers\n" * 50


class Recorder:
    """``Reply.record_upload`` as the core keeps it: one id per attachment, the latest wins;
    with the number of shares Slack had when each id was recorded."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self.ids: dict[int, str] = {}
        self.log: list[tuple[int, str, int]] = []

    async def __call__(self, attachment_id: int, platform_file_id: str) -> None:
        self.ids[attachment_id] = platform_file_id
        self.log.append((attachment_id, platform_file_id, len(self.fake.shares)))

    def files(self, reply: Reply) -> tuple[OutgoingFile, ...]:
        """The reply's files as the next attempt gets them: with the recorded ids."""
        return tuple(
            replace(f, platform_file_id=self.ids.get(f.attachment_id)) for f in reply.files
        )


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake:
        fake.add_channel(CHANNEL, "general")
        fake.add_channel(DM, is_im=True, user=HUMAN)
        yield fake


async def _no_dispatch(message: InboundMessage) -> Any:
    raise AssertionError(f"nothing comes in here: {message}")


@asynccontextmanager
async def slack_channel(fake: FakeSlack) -> AsyncIterator[Channel]:
    """The Slack channel alone (no database: ``send`` needs none), started against ``fake``."""
    channel = plugin.build(
        agent=AgentSettings(slug="assistant"),
        settings=SlackChannelSettings(**slack_section(fake)),
        dispatch=_no_dispatch,  # type: ignore[arg-type]
    )
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


def files_reply(fake: FakeSlack, recorder: Recorder, *, text: str, thread_ts: str) -> Reply:
    reply = outgoing_reply(
        channel="slack",
        external_conv_id=f"slack:{TEAM}:{CHANNEL}:{thread_ts}",
        text=text,
        reply_target={"channel": CHANNEL, "thread_ts": thread_ts, "message_ts": thread_ts},
        delivery_key="d-files-1",
    )
    files = (
        OutgoingFile(
            attachment_id=11, position=0, name="chart.png", content_type="image/png", data=IMAGE
        ),
        OutgoingFile(
            attachment_id=12,
            position=1,
            name="report.pdf",
            content_type="application/pdf",
            data=REPORT,
        ),
    )
    return replace(reply, files=files, record_upload=recorder)


def retry(reply: Reply, recorder: Recorder) -> Reply:
    """The next attempt of an in-doubt delivery, as the core hands it over."""
    return replace(reply, in_doubt=True, attempt=reply.attempt + 1, files=recorder.files(reply))


async def downloaded(fake: FakeSlack, file_id: str) -> bytes:
    document = fake.uploads[file_id].document(fake)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(document["url_private_download"], headers=headers) as response,
    ):
        assert response.status == 200
        return await response.read()


def assert_one_text_and_two_files(fake: FakeSlack, recorder: Recorder, thread: str) -> None:
    thread_messages = [m for m in fake.messages(CHANNEL) if m.get("thread_ts") == thread]
    texts = [m for m in thread_messages if m.get("subtype") != "file_share" and m["ts"] != thread]
    shared = [m for m in thread_messages if m.get("subtype") == "file_share"]
    assert len(texts) == 1 and texts[0]["metadata"]["event_payload"]["delivery_id"] == "d-files-1"
    assert [[f["name"] for f in m["files"]] for m in shared] == [["chart.png"], ["report.pdf"]]
    assert [(s["file_id"], s["thread_ts"]) for s in fake.shares] == [
        (recorder.ids[11], thread),
        (recorder.ids[12], thread),
    ]


async def test_text_then_image_and_file_shared_once_into_the_thread(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="<@U0BOT00001> chart please")["ts"]
    recorder = Recorder(fake_slack)
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Here you go.", thread_ts=root)
        [ts] = await channel.send(reply)
        assert_one_text_and_two_files(fake_slack, recorder, root)
        # Each id was recorded after its bytes were at Slack and before it was shared.
        assert [(a, shares) for a, _id, shares in recorder.log] == [(11, 0), (12, 1)]
        assert [fake_slack.uploads[recorder.ids[a]].data for a in (11, 12)] == [IMAGE, REPORT]
        assert await downloaded(fake_slack, recorder.ids[11]) == IMAGE
        # The bytes go to the upload URL without the bot token.
        assert [c.status for c in fake_slack.upload_requests] == [200, 200]
        assert all("Authorization" not in c.headers for c in fake_slack.upload_requests)
        lengths = [c.params["length"] for c in fake_slack.calls_to("files.getUploadURLExternal")]
        assert lengths == [str(len(IMAGE)), str(len(REPORT))]
        # An in-doubt resend finds the text and both shares: nothing is posted or shared again.
        assert await channel.send(retry(reply, recorder)) == [ts]
    assert_one_text_and_two_files(fake_slack, recorder, root)
    assert len(fake_slack.calls_to("files.getUploadURLExternal")) == 2
    assert len(fake_slack.calls_to("files.completeUploadExternal")) == 2
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_a_share_that_landed_unanswered_is_not_shared_again(fake_slack: FakeSlack) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    recorder = Recorder(fake_slack)
    fake_slack.drop_next(method="files.completeUploadExternal")  # shared, answer lost
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Two files.", thread_ts=root)
        with pytest.raises(DeliveryError) as failed:
            await channel.send(reply)
        assert failed.value.in_doubt and not failed.value.permanent
        assert len(fake_slack.shares) == 1 and list(recorder.ids) == [11]
        await channel.send(retry(reply, recorder))
    assert_one_text_and_two_files(fake_slack, recorder, root)
    completes = fake_slack.calls_to("files.completeUploadExternal")
    assert len(completes) == 2  # the lost one, then the second file's only
    assert len(fake_slack.calls_to("files.getUploadURLExternal")) == 2
    assert len(fake_slack.calls_to("files.info")) == 1


async def test_a_share_refused_with_5xx_is_completed_later_without_uploading_again(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    recorder = Recorder(fake_slack)
    fake_slack.fail_next(2, status=503, method="files.completeUploadExternal")
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Two files.", thread_ts=root)
        with pytest.raises(DeliveryError) as failed:
            await channel.send(reply)
        assert failed.value.in_doubt
        with pytest.raises(DeliveryError):
            await channel.send(retry(reply, recorder))
        await channel.send(retry(reply, recorder))
    assert_one_text_and_two_files(fake_slack, recorder, root)
    assert len(fake_slack.calls_to("files.getUploadURLExternal")) == 2
    assert len(fake_slack.uploads) == 2


async def test_rate_limited_steps_carry_retry_after_and_finish_once(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    recorder = Recorder(fake_slack)
    fake_slack.rate_limit_next(retry_after=7, method="files.getUploadURLExternal")
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Two files.", thread_ts=root)
        with pytest.raises(DeliveryError) as failed:
            await channel.send(reply)
        assert failed.value.retry_after == 7 and failed.value.in_doubt  # the text went out
        fake_slack.rate_limit_next(retry_after=3, method="files.completeUploadExternal")
        with pytest.raises(DeliveryError) as again:
            await channel.send(retry(reply, recorder))
        assert again.value.retry_after == 3
        await channel.send(retry(reply, recorder))
    assert_one_text_and_two_files(fake_slack, recorder, root)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_failed_bytes_leave_nothing_to_share_and_are_uploaded_anew(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    recorder = Recorder(fake_slack)
    fake_slack.fail_next(status=500, method=UPLOAD_METHOD)
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Two files.", thread_ts=root)
        with pytest.raises(DeliveryError):
            await channel.send(reply)
        assert recorder.ids == {} and fake_slack.shares == []  # nothing recorded yet
        await channel.send(retry(reply, recorder))
    assert_one_text_and_two_files(fake_slack, recorder, root)
    orphan = [u for u in fake_slack.uploads.values() if u.data is None]
    assert len(orphan) == 1 and not orphan[0].shares  # Slack discards it; no one saw it


async def test_an_expired_recorded_upload_fails_permanently_and_is_not_uploaded_again(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    recorder = Recorder(fake_slack)
    fake_slack.fail_next(method="files.completeUploadExternal")
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="Two files.", thread_ts=root)
        with pytest.raises(DeliveryError):
            await channel.send(reply)
        fake_slack.expire_upload(recorder.ids[11])
        with pytest.raises(DeliveryError) as failed:
            await channel.send(retry(reply, recorder))
    assert failed.value.permanent and "expired" in str(failed.value)
    assert len(fake_slack.calls_to("files.getUploadURLExternal")) == 1  # never uploaded again
    assert fake_slack.shares == [] and len(recorder.log) == 1


async def test_a_reply_of_files_alone_posts_no_text_in_a_dm(fake_slack: FakeSlack) -> None:
    recorder = Recorder(fake_slack)
    async with slack_channel(fake_slack) as channel:
        reply = outgoing_reply(
            channel="slack",
            external_conv_id=f"slack:{TEAM}:{DM}",
            text="",
            reply_target={"channel": DM, "thread_ts": "", "message_ts": ""},
        )
        image = OutgoingFile(
            attachment_id=5, position=0, name="a.png", content_type="image/png", data=IMAGE
        )
        assert await channel.send(replace(reply, files=(image,), record_upload=recorder)) == []
    assert fake_slack.posts == []
    [share] = fake_slack.shares
    assert (share["channel"], share["thread_ts"], share["file_id"]) == (DM, None, recorder.ids[5])


async def test_sharing_where_the_bot_is_not_is_a_permanent_failure(
    fake_slack: FakeSlack,
) -> None:
    root = fake_slack.add_message(CHANNEL, text="files?")["ts"]
    fake_slack.bot_leaves(CHANNEL)
    recorder = Recorder(fake_slack)
    async with slack_channel(fake_slack) as channel:
        reply = files_reply(fake_slack, recorder, text="", thread_ts=root)
        with pytest.raises(DeliveryError) as failed:
            await channel.send(reply)
    assert failed.value.permanent and fake_slack.shares == []


async def test_the_slack_channel_says_it_sends_files(database_url: str) -> None:
    async with (
        FakeSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake,
        running_bridge(
            make_settings(database_url, agents=[{"slug": "a", "slack": slack_section(fake)}])
        ) as bridge,
    ):
        assert bridge.app[CHANNELS].get("slack", "a") is not None
        assert plugin.capabilities.sends_files


async def test_an_agent_answer_with_files_reaches_the_slack_thread_once(
    database_url: str, fake_slack: FakeSlack
) -> None:
    """End to end: a mention, the webhook agent answers with an image and a file, the bridge
    stores them and the Slack channel shares each once in the mention's thread."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        agent.add_reply(
            "Here are both.",
            attachments=[
                inline_file("chart.png", IMAGE, "image/png"),
                inline_file("report.pdf", REPORT, "application/pdf"),
            ],
        )
        config = webhook_agent_config(agent, slack=slack_section(fake_slack, streaming="off"))
        config.pop("inmemory")
        async with running_bridge(make_settings(database_url, agents=[config])) as bridge:
            mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> go")
            root = mention["event"]["ts"]
            pushed = await fake_slack.push_event(f"{bridge.url}/slack/assistant/events", mention)
            assert pushed.status == 200
            await fake_slack.wait_until(lambda: len(fake_slack.shares) >= 2, timeout=20)
            await wait_until(
                lambda: _delivered(bridge), within=10, what="the reply recorded as delivered"
            )
    [post] = fake_slack.posts
    assert (post["text"], post["thread_ts"]) == ("Here are both.", root)
    assert [(s["title"], s["thread_ts"]) for s in fake_slack.shares] == [
        ("chart.png", root),
        ("report.pdf", root),
    ]
    assert [fake_slack.uploads[s["file_id"]].data for s in fake_slack.shares] == [IMAGE, REPORT]
    assert len(fake_slack.calls_to("files.getUploadURLExternal")) == 2


async def _delivered(bridge: RunningBridge) -> bool:
    replies = [m for m in await bridge.messages() if m.role == "assistant"]
    return bool(replies) and replies[0].state == MessageState.DELIVERED


# --- the fake's strictness -------------------------------------------------------------------


async def test_fake_upload_steps_are_strict(fake_slack: FakeSlack) -> None:
    root = fake_slack.add_message(CHANNEL, text="root")["ts"]
    reply_ts = fake_slack.add_message(CHANNEL, text="in thread", thread_ts=root)["ts"]
    api = fake_slack.api_url
    auth = {"Authorization": f"Bearer {BOT_TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as session:

        async def call(method: str, **params: Any) -> dict[str, Any]:
            async with session.post(f"{api}{method}", params=params) as response:
                answer: dict[str, Any] = await response.json()
                return answer

        assert (await call("files.getUploadURLExternal", filename="x", length=0))[
            "error"
        ] == "missing_argument"
        started = await call("files.getUploadURLExternal", filename="x.txt", length=3)
        file_id, url = started["file_id"], started["upload_url"]
        files = f'[{{"id": "{file_id}"}}]'
        early = await call("files.completeUploadExternal", files=files, channel_id=CHANNEL)
        assert early["error"] == "file_not_found"  # no bytes yet
        async with aiohttp.ClientSession() as plain:
            async with plain.post(url, data=b"four") as wrong:
                assert wrong.status != 200
            async with plain.post(url, data=b"abc") as right:
                assert right.status == 200
        not_parent = await call(
            "files.completeUploadExternal", files=files, channel_id=CHANNEL, thread_ts=reply_ts
        )
        assert not_parent["error"] == "invalid_thread_ts"
        assert (await call("files.info", file=file_id))["file"]["shares"] == {}
        done = await call(
            "files.completeUploadExternal", files=files, channel_id=CHANNEL, thread_ts=root
        )
        assert done["ok"]
        shares = (await call("files.info", file=file_id))["file"]["shares"]
        assert [s["thread_ts"] for s in shares["public"][CHANNEL]] == [root]
        thread = await call("conversations.replies", channel=CHANNEL, ts=root)
        assert [m["files"][0]["id"] for m in thread["messages"] if "files" in m] == [file_id]
        # Like Slack, completing twice shares twice: the channel must never do it.
        await call("files.completeUploadExternal", files=files, channel_id=CHANNEL)
        assert len(fake_slack.shares_of(file_id)) == 2
    fake_slack.scopes = fake_slack.scopes.replace(",files:write", "")
    async with (
        aiohttp.ClientSession(headers=auth) as session,
        session.post(
            f"{api}files.getUploadURLExternal", params={"filename": "x", "length": 1}
        ) as response,
    ):
        assert (await response.json())["error"] == "missing_scope"
