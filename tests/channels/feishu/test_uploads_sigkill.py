"""A process killed with SIGKILL while it sends a reply's files to Feishu: the next process
finishes the same delivery, and Feishu holds the text, one image message and one file message,
in the thread of the message answered, with the image uploaded once.

Two moments: while the file message is on its way (both keys recorded; Feishu holds the send
and stores it after the kill, as a platform that accepted the request does: the next run's
``uuid`` gets that message back), and while the file is uploading (the image's key recorded,
the file's not: the next run uploads the file again, the one upload that cannot be avoided
without an idempotency key, and still posts it once).

The process is :mod:`tests.channels.feishu.upload_driver`: the real channel delivering a
``Reply`` built as the core builds one, with ``record_upload`` kept in a file. (The core's
loading of files into ``Reply.files``, and the database's keys, are the core's; the last
test runs the whole path through ``bridge serve``.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bridge.store.models import AttachmentRow
from tests.channels.contract_drivers import feishu_section
from tests.channels.feishu.upload_driver import DELIVERY_KEY, PDF, PNG, TEXT
from tests.fakes.feishu import DEFAULT_GROUP_CHAT_ID, FakeFeishu
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.harness import WEBHOOK_SECRET, webhook_agent_config
from tests.support.processes import bridge_database, serving_bridge, wait_until
from tests.support.serve_files import migrated_config, wait_delivered

ROOT = Path(__file__).resolve().parents[3]
HELD_SECONDS = 3.0


async def _run(state: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.channels.feishu.upload_driver",
        str(state),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("moment", ["file message", "file upload"])
async def test_sigkill_mid_files_posts_each_file_once(tmp_path: Path, moment: str) -> None:
    async with FakeFeishu() as fake:
        event = fake.message_event(
            chat_id=DEFAULT_GROUP_CHAT_ID, chat_type="group", text="report?", thread_id="omt_t"
        )
        fake.remember(event)
        asked = str(event["event"]["message"]["message_id"])
        state = tmp_path / "state.json"
        section = feishu_section(fake, status_reactions=False)
        state.write_text(json.dumps({"section": section, "asked": asked}), encoding="utf-8")

        if moment == "file message":
            fake.delay_next(1, HELD_SECONDS, method="send.file")
        else:
            fake.delay_next(1, 0.0, method="upload")  # the image: at once
            fake.delay_next(1, HELD_SECONDS, method="upload")  # the file: held

        def held() -> bool:
            if moment == "file message":
                return any(
                    isinstance(r.json, dict) and r.json.get("msg_type") == "file"
                    for r in fake.message_creates()
                )
            return len(fake.requests_to("POST", "/open-apis/im/v1/files")) == 1

        first = await _run(state)
        try:
            await wait_until(held, within=30, what=f"the {moment} held by Feishu")
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL

        recorded = json.loads(state.read_text(encoding="utf-8"))["recorded"]
        [image_upload] = fake.uploads_of("image")
        assert recorded["101"] == f"image:{image_upload.key}"
        if moment == "file message":
            assert [sent.msg_type for sent in fake.sent] == ["post", "image"]
            assert recorded["102"].startswith("file:")
        else:
            assert fake.sent == [] and "102" not in recorded
        # Feishu finishes what it accepted, after the kill.
        expected_after_kill = 3 if moment == "file message" else 0
        await wait_until(
            lambda: len(fake.sent) == expected_after_kill and len(fake.uploads) == 2,
            within=HELD_SECONDS + 10,
            what="Feishu finishing the held request",
        )

        second = await _run(state)
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err.decode()

        post, image, file = fake.sent
        assert post.msg_type == "post" and post.text == TEXT
        assert image.msg_type == "image" and file.msg_type == "file"
        for sent in fake.sent:
            assert sent.reply_to == asked and sent.thread_id == "omt_t"
            assert sent.chat_id == DEFAULT_GROUP_CHAT_ID
        assert [image.uuid, file.uuid] == [f"{DELIVERY_KEY}-f0", f"{DELIVERY_KEY}-f1"]
        assert out.decode().strip() == "sent " + json.dumps([s.message_id for s in fake.sent])
        # The image was uploaded once; the file once, or twice when the kill hid its key.
        assert [u.data for u in fake.uploads_of("image")] == [PNG]
        file_uploads = fake.uploads_of("file")
        assert [u.data for u in file_uploads] == [PDF] * (1 if moment == "file message" else 2)
        assert image.data == {"image_key": image_upload.key}
        final = json.loads(state.read_text(encoding="utf-8"))["recorded"]
        assert file.data == {"file_key": final["102"].partition(":")[2]}
        assert final["102"] == f"file:{file_uploads[-1].key}"


async def test_sigkill_of_bridge_serve_mid_file_message(tmp_path: Path) -> None:
    """End to end through ``bridge serve``: the webhook agent answers with an image and a
    file; the bridge is killed while Feishu holds the file message; the restarted bridge
    finishes the in-doubt delivery from the keys recorded in the database."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with FakeFeishu() as fake, FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        fake.add_user()
        agent.add_reply(
            TEXT,
            attachments=[
                inline_file("chart.png", PNG, "image/png"),
                inline_file("report.pdf", PDF, "application/pdf"),
            ],
        )
        section = feishu_section(fake, streaming="off", status_reactions=False)
        settings = webhook_agent_config(agent, feishu=section)
        config = migrated_config(tmp_path, database_url, settings)
        fake.delay_next(1, HELD_SECONDS, method="send.file")
        event = fake.message_event(
            chat_id=DEFAULT_GROUP_CHAT_ID,
            chat_type="group",
            text="report?",
            mention_bot=True,
            thread_id="omt_serve",
        )
        asked = str(event["event"]["message"]["message_id"])

        async with serving_bridge(config, cwd=tmp_path) as first:
            pushed = await fake.push(f"{first.url}/feishu/assistant/events", event)
            assert pushed.status == 200
            await wait_until(
                lambda: any(
                    isinstance(r.json, dict) and r.json.get("msg_type") == "file"
                    for r in fake.message_creates()
                ),
                within=30,
                what="the file message held by Feishu",
            )
            first.kill()
            assert await first.wait() == -9
        await wait_until(lambda: len(fake.sent) == 3, within=15, what="the held message stored")
        [image_upload] = fake.uploads_of("image")
        [file_upload] = fake.uploads_of("file")

        async with serving_bridge(config, cwd=tmp_path):
            reply = await wait_delivered(database_url)

        async with (
            bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
            db.sessions() as session,
        ):
            query = select(AttachmentRow.platform_file_id).where(
                AttachmentRow.message_id == reply.id
            )
            recorded = sorted((await session.scalars(query)).all(), key=str)

    assert recorded == [f"file:{file_upload.key}", f"image:{image_upload.key}"]
    assert len(fake.uploads) == 2  # nothing uploaded again
    post, image, file = fake.sent
    assert (post.msg_type, post.text) == ("post", TEXT)
    assert image.data == {"image_key": image_upload.key}
    assert file.data == {"file_key": file_upload.key}
    for sent in fake.sent:
        assert sent.reply_to == asked and sent.thread_id == "omt_serve"
    assert reply.platform_message_ids == [s.message_id for s in fake.sent]
    # The restart sent each again with its uuid and got Feishu's first message back.
    assert {hit["uuid"] for hit in fake.uuid_hits} >= {image.uuid, file.uuid}
