"""A reply's files on Feishu: uploaded (image or file endpoint), the key recorded before the
message that shows it, then one image/file message per file where the text went, with a
``uuid`` per file, so that any retry (after a lost answer, a failure, a crash) ends with each
file uploaded once and posted once.

The channel is driven with :class:`Reply` values built here, as the core's delivery builds
them; ``record_upload`` keeps the keys as the core's would (here in a dict), and each later
attempt gets them back as ``platform_file_id``. Against the strict fake over real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bridge.ports.contract import ChannelContext
from bridge.ports.errors import DeliveryError
from bridge.ports.events import OutgoingFile, Reply
from bridge.settings import AgentSettings
from bridge.store.models import AttachmentRow, MessageState
from channels.feishu import plugin
from channels.feishu.adapter import FeishuChannel
from channels.feishu.client import FeishuError
from channels.feishu.settings import FeishuChannelSettings
from channels.feishu.uploads import file_uuid, plan
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import (
    CODE_INVALID_PARAM,
    CODE_MSG_TYPE_MISMATCH,
    CODE_UPLOAD_EMPTY,
    CODE_UPLOAD_PARAM,
    CODE_UPLOAD_TOO_LARGE,
    DEFAULT_GROUP_CHAT_ID,
    FakeFeishu,
)
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.harness import (
    WEBHOOK_SECRET,
    make_settings,
    running_bridge,
    webhook_agent_config,
)
from tests.support.processes import wait_until

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + b"\r\n--not-a-boundary\r\n" * 50 + bytes(range(256))
KEY = "d3c1b2a4e5f60718293a4b5c"
TEXT = "Here are the chart and the report."
IMAGES = "/open-apis/im/v1/images"
FILES = "/open-apis/im/v1/files"


class Recorder:
    """``Reply.record_upload``, keeping what the core's would keep, and what Feishu held at
    the moment each key was recorded."""

    def __init__(self, fake: FakeFeishu) -> None:
        self.fake = fake
        self.recorded: dict[int, str] = {}
        self.messages_when_recorded: list[int] = []

    async def __call__(self, attachment_id: int, platform_file_id: str) -> None:
        assert attachment_id not in self.recorded, "an upload recorded twice"
        self.recorded[attachment_id] = platform_file_id
        self.messages_when_recorded.append(len(self.fake.sent))


def outgoing(
    attachment_id: int, position: int, name: str, content_type: str, data: bytes
) -> OutgoingFile:
    return OutgoingFile(
        attachment_id=attachment_id,
        position=position,
        name=name,
        content_type=content_type,
        data=data,
    )


CHART = outgoing(11, 0, "chart.png", "image/png", PNG)
REPORT = outgoing(12, 1, "report.pdf", "application/pdf", PDF)


def reply_with(
    files: tuple[OutgoingFile, ...],
    recorder: Recorder,
    *,
    target: dict[str, str],
    text: str = TEXT,
    attempt: int = 1,
) -> Reply:
    return Reply(
        message_id=1,
        session_id=1,
        delivery_key=KEY,
        agent_slug="assistant",
        channel="feishu",
        external_conv_id="x",
        text=text,
        reply_target=target,
        in_doubt=attempt > 1,
        attempt=attempt,
        files=files,
        record_upload=recorder,
    )


def again(reply: Reply, recorder: Recorder) -> Reply:
    """The next attempt, as the core builds it: each recorded key back on its file."""
    files = tuple(
        replace(file, platform_file_id=recorder.recorded.get(file.attachment_id))
        for file in reply.files
    )
    return replace(reply, files=files, in_doubt=True, attempt=reply.attempt + 1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu() as running:
        yield running


@pytest.fixture
async def channel(fake: FakeFeishu) -> AsyncIterator[FeishuChannel]:
    async def dispatch(event: object) -> Any:
        raise AssertionError(f"nothing is dispatched here: {event}")

    built = FeishuChannel(
        context=ChannelContext(
            agent=AgentSettings(slug="assistant"),
            settings=FeishuChannelSettings.model_validate(
                feishu_section(fake, status_reactions=False)
            ),
            dispatch=dispatch,  # type: ignore[arg-type]
        )
    )
    await built.start()
    yield built
    await built.stop()


def asked_in_thread(fake: FakeFeishu) -> str:
    """A user's message in a group topic thread, for the reply to answer."""
    event = fake.message_event(
        chat_id=DEFAULT_GROUP_CHAT_ID, chat_type="group", text="charts?", thread_id="omt_topic1"
    )
    fake.remember(event)
    return str(event["event"]["message"]["message_id"])


def contents(fake: FakeFeishu) -> list[tuple[str, dict[str, Any]]]:
    return [(sent.msg_type, sent.data) for sent in fake.sent]


def test_the_plugin_says_it_sends_files() -> None:
    assert plugin.capabilities.sends_files is True


async def test_an_image_and_a_file_are_uploaded_and_replied_in_the_thread(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    reply = reply_with((REPORT, CHART), recorder, target={"message_id": asked, "in_thread": "1"})

    ids = await channel.send(reply)

    [image] = fake.uploads_of("image")
    [file] = fake.uploads_of("file")
    assert image.data == PNG and image.image_type == "message"
    assert file.data == PDF and (file.file_type, file.file_name) == ("pdf", "report.pdf")
    assert recorder.recorded == {11: f"image:{image.key}", 12: f"file:{file.key}"}
    # Both keys were kept before any message showed them.
    assert recorder.messages_when_recorded == [0, 0]
    post, shown_image, shown_file = fake.sent
    assert post.msg_type == "post" and post.text == TEXT
    assert contents(fake)[1:] == [
        ("image", {"image_key": image.key}),
        ("file", {"file_key": file.key}),
    ]
    for sent in fake.sent:
        assert sent.reply_to == asked and sent.reply_in_thread is True
        assert sent.thread_id == "omt_topic1" and sent.chat_id == DEFAULT_GROUP_CHAT_ID
    assert [shown_image.uuid, shown_file.uuid] == [f"{KEY}-f0", f"{KEY}-f1"]
    assert list(ids) == [post.message_id, shown_image.message_id, shown_file.message_id]


async def test_a_repeated_delivery_uploads_nothing_and_posts_nothing(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    first = reply_with((CHART, REPORT), recorder, target={"message_id": asked})
    ids = await channel.send(first)

    repeated = await channel.send(again(first, recorder))

    assert list(repeated) == list(ids)
    assert len(fake.uploads) == 2 and len(fake.sent) == 3
    assert len(fake.uuid_hits) == 3


async def test_a_crash_after_the_upload_sends_the_recorded_key(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    """The upload landed and was recorded, the message never went: the next attempt shows
    the recorded key, uploading nothing."""
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    first = reply_with((CHART, REPORT), recorder, target={"message_id": asked})
    fake.fail_next(1, method="send.image")
    with pytest.raises(DeliveryError) as raised:
        await channel.send(first)
    assert raised.value.in_doubt and not raised.value.permanent
    assert [sent.msg_type for sent in fake.sent] == ["post"]
    assert len(fake.uploads) == 2 and len(recorder.recorded) == 2

    await channel.send(again(first, recorder))

    assert len(fake.uploads) == 2
    assert [sent.msg_type for sent in fake.sent] == ["post", "image", "file"]
    assert contents(fake)[1][1] == {"image_key": recorder.recorded[11].partition(":")[2]}


async def test_a_lost_answer_to_the_file_message_is_deduplicated_by_its_uuid(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    first = reply_with((CHART, REPORT), recorder, target={"message_id": asked})
    fake.drop_next(1, method="send.file")  # Feishu posts it; the bridge never hears back
    with pytest.raises(DeliveryError) as raised:
        await channel.send(first)
    assert raised.value.in_doubt
    assert [sent.msg_type for sent in fake.sent] == ["post", "image", "file"]

    ids = await channel.send(again(first, recorder))

    assert [sent.msg_type for sent in fake.sent] == ["post", "image", "file"]
    assert list(ids) == [sent.message_id for sent in fake.sent]
    assert len(fake.uploads) == 2
    assert [hit["uuid"] for hit in fake.uuid_hits][-1] == file_uuid(KEY, 1)


async def test_a_failed_upload_is_retried_later(fake: FakeFeishu, channel: FeishuChannel) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    first = reply_with((CHART, REPORT), recorder, target={"message_id": asked})
    fake.fail_next(1, 503, method="upload")
    with pytest.raises(DeliveryError) as raised:
        await channel.send(first)
    assert raised.value.in_doubt and not raised.value.permanent
    assert fake.uploads == [] and fake.sent == [] and recorder.recorded == {}

    await channel.send(again(first, recorder))

    assert len(fake.uploads) == 2
    assert [sent.msg_type for sent in fake.sent] == ["post", "image", "file"]


async def test_the_file_after_a_recorded_image_is_uploaded_alone(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    first = reply_with((CHART, REPORT), recorder, target={"message_id": asked})
    # First upload (the image) passes, the second (the file) fails with a 500.
    fake.delay_next(1, 0.0, method="upload")
    fake.fail_next(1, 500, method="upload")
    with pytest.raises(DeliveryError) as raised:
        await channel.send(first)
    assert not raised.value.permanent
    assert list(recorder.recorded) == [11] and fake.sent == []

    await channel.send(again(first, recorder))

    assert len(fake.uploads_of("image")) == 1 and len(fake.uploads_of("file")) == 1
    assert [sent.msg_type for sent in fake.sent] == ["post", "image", "file"]


async def test_files_larger_than_feishu_allows_are_named_in_the_text(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    big_image = outgoing(21, 0, "huge.png", "image/png", PNG + b"\0" * (10 * 1024 * 1024))
    big_file = outgoing(22, 1, "huge.zip", "application/zip", b"\0" * (30 * 1024 * 1024 + 1))
    fits = outgoing(23, 2, "notes.txt", "text/plain", b"fits")
    at_limit = outgoing(24, 3, "max.png", "image/png", PNG.ljust(10 * 1024 * 1024, b"\0"))
    files = (big_image, big_file, fits, at_limit)
    reply = reply_with(files, recorder, target={"message_id": asked})

    await channel.send(reply)

    upload, image = fake.uploads
    assert (upload.file_type, upload.file_name, upload.data) == ("stream", "notes.txt", b"fits")
    assert image.kind == "image" and image.data == at_limit.data
    post, file, _ = fake.sent
    assert post.text == (
        f"{TEXT}\n[file: huge.png not sent: larger than Feishu allows]"
        "\n[file: huge.zip not sent: larger than Feishu allows]"
    )
    assert file.msg_type == "file" and file.uuid == file_uuid(KEY, 2)


async def test_a_file_feishu_refuses_for_good_is_named_and_the_rest_is_sent(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    not_an_image = outgoing(31, 0, "fake.png", "image/png", b"plain text, not a PNG")
    reply = reply_with((not_an_image, REPORT), recorder, target={"message_id": asked})

    await channel.send(reply)

    assert [upload.kind for upload in fake.uploads] == ["file"]
    assert list(recorder.recorded) == [12]
    post, file = fake.sent
    assert post.text == f"{TEXT}\n[file: fake.png not sent: Feishu refused it (234011)]"
    assert file.msg_type == "file"


async def test_an_agent_posting_first_sends_its_files_into_the_chat(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    recorder = Recorder(fake)
    reply = reply_with((CHART,), recorder, target={"chat_id": DEFAULT_GROUP_CHAT_ID}, text="")

    ids = await channel.send(reply)

    [image] = fake.sent
    assert image.kind == "send" and image.receive_id == DEFAULT_GROUP_CHAT_ID
    assert image.receive_id_type == "chat_id" and image.msg_type == "image"
    assert list(ids) == [image.message_id]


async def test_file_types_follow_the_content_type_and_the_name(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    asked = asked_in_thread(fake)
    recorder = Recorder(fake)
    files = (
        outgoing(41, 0, "voice.opus", "audio/opus", b"OggS-opus"),
        outgoing(42, 1, "clip.mp4", "video/mp4", b"mp4-bytes"),
        outgoing(43, 2, "sheet.xlsx", "application/octet-stream", b"xlsx"),
        outgoing(44, 3, "photo.JPG", "image/jpeg", b"\xff\xd8\xff\xe0jpeg"),
    )

    await channel.send(reply_with(files, recorder, target={"message_id": asked}))

    assert [(u.kind, u.file_type) for u in fake.uploads] == [
        ("file", "opus"),
        ("file", "stream"),
        ("file", "xls"),
        ("image", None),
    ]
    assert [sent.msg_type for sent in fake.sent] == ["post", "audio", "file", "file", "image"]


def test_file_uuids_are_stable_distinct_and_short() -> None:
    assert file_uuid(KEY, 0) == file_uuid(KEY, 0) != file_uuid(KEY, 1)
    assert file_uuid(KEY, 0) != f"{KEY}-0"  # the first text part's
    long_key = "k" * 60
    assert len(file_uuid(long_key, 12)) <= 50
    assert file_uuid(long_key, 12) != file_uuid("k" * 61, 12)
    uploads, notes = plan((REPORT, CHART))
    assert [upload.file.position for upload in uploads] == [0, 1] and notes == []


# --- the fake is as strict as Feishu -----------------------------------------------------


async def test_the_fake_refuses_what_feishu_refuses(
    fake: FakeFeishu, channel: FeishuChannel
) -> None:
    token = fake.issue_token()
    headers = {"Authorization": f"Bearer {token}"}

    async def post(path: str, fields: list[tuple[str, Any, str | None]]) -> int:
        form = aiohttp.FormData()
        for name, value, filename in fields:
            form.add_field(name, value, filename=filename)
        async with (
            aiohttp.ClientSession() as http,
            http.post(fake.base_url + path, data=form, headers=headers) as response,
        ):
            return int((await response.json())["code"])

    assert await post(IMAGES, [("image_type", "banner", None), ("image", PNG, "a.png")]) == (
        CODE_UPLOAD_PARAM
    )
    assert await post(IMAGES, [("image_type", "message", None), ("image", b"", "a.png")]) == (
        CODE_UPLOAD_EMPTY
    )
    too_big = PNG + b"\0" * (10 * 1024 * 1024)
    assert await post(IMAGES, [("image_type", "message", None), ("image", too_big, "a.png")]) == (
        CODE_UPLOAD_TOO_LARGE
    )
    assert (
        await post(
            FILES, [("file_type", "zip", None), ("file_name", "a.zip", None), ("file", b"x", "a")]
        )
        == CODE_UPLOAD_PARAM
    )
    assert await post(FILES, [("file_type", "pdf", None), ("file", PDF, "a.pdf")]) == (
        CODE_UPLOAD_PARAM
    )
    assert fake.uploads == []
    assert (
        await post(
            FILES, [("file_type", "mp4", None), ("file_name", "a.mp4", None), ("file", b"x", "a")]
        )
        == 0
    )
    [mp4] = fake.uploads

    # A message shows only this app's keys, each by its upload's message type.
    asked = asked_in_thread(fake)
    client = channel._client
    assert client is not None
    for msg_type, content, code in [
        ("image", {"image_key": "img_v3_not_ours"}, CODE_INVALID_PARAM),
        ("file", {"file_key": "file_v3_not_ours"}, CODE_INVALID_PARAM),
        ("file", {"file_key": mp4.key}, CODE_MSG_TYPE_MISMATCH),
    ]:
        with pytest.raises(FeishuError) as refused:
            await client.reply(
                message_id=asked, msg_type=msg_type, content=content, in_thread=False, uuid="u1"
            )
        assert refused.value.code == code
    assert fake.sent == []


# --- end to end ----------------------------------------------------------------------------


async def test_an_agent_answer_with_files_reaches_the_feishu_thread_once(
    database_url: str,
) -> None:
    """A user's message in a topic thread, the webhook agent answers with an image and a
    file: the bridge stores them, the Feishu channel uploads each once (keys recorded in the
    database) and replies the text, the image and the file in the thread."""
    async with FakeFeishu() as fake, FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        fake.add_user()
        agent.add_reply(
            TEXT,
            attachments=[
                inline_file("chart.png", PNG, "image/png"),
                inline_file("report.pdf", PDF, "application/pdf"),
            ],
        )
        config = webhook_agent_config(
            agent, feishu=feishu_section(fake, streaming="off", status_reactions=False)
        )
        config.pop("inmemory")
        async with running_bridge(make_settings(database_url, agents=[config])) as bridge:
            event = fake.message_event(
                chat_id=DEFAULT_GROUP_CHAT_ID,
                chat_type="group",
                text="charts?",
                mention_bot=True,
                thread_id="omt_e2e",
            )
            asked = str(event["event"]["message"]["message_id"])
            pushed = await fake.push(f"{bridge.url}/feishu/assistant/events", event)
            assert pushed.status == 200

            async def delivered() -> bool:
                replies = [m for m in await bridge.messages() if m.role == "assistant"]
                return bool(replies) and replies[0].state == MessageState.DELIVERED

            await wait_until(delivered, within=20, what="the reply delivered")
            [reply] = [m for m in await bridge.messages() if m.role == "assistant"]
            async with bridge.sessions() as db:
                rows = (
                    await db.scalars(
                        select(AttachmentRow)
                        .where(AttachmentRow.message_id == reply.id)
                        .order_by(AttachmentRow.position)
                    )
                ).all()

    [image_upload] = fake.uploads_of("image")
    [file_upload] = fake.uploads_of("file")
    assert (image_upload.data, file_upload.data) == (PNG, PDF)
    assert [row.platform_file_id for row in rows] == [
        f"image:{image_upload.key}",
        f"file:{file_upload.key}",
    ]
    post, image, file = fake.sent
    assert post.text == TEXT
    assert image.data == {"image_key": image_upload.key}
    assert file.data == {"file_key": file_upload.key}
    for sent in fake.sent:
        assert sent.reply_to == asked and sent.thread_id == "omt_e2e"
    assert reply.platform_message_ids == [post.message_id, image.message_id, file.message_id]
