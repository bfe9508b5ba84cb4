"""A process delivering a Slack reply with an image and a file is SIGKILLed mid-upload, twice;
the restarted process ends with one text message and exactly one share of each file in the
thread.

The core does not hand files to channels in a running ``bridge serve`` yet, so each process is
this module run as a worker (``python -m tests.channels.slack.test_uploads_sigkill JOB``): the
real Slack channel (slack_sdk, its own aiohttp session) delivers one ``Reply`` built as the
delivery step builds it, and ``record_upload`` persists each file id to a file with fsync
before the share, as the core persists it to the database. The next process gets the recorded
ids and ``in_doubt``, as the core hands an in-doubt delivery to its next attempt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.fakes.slack import UPLOAD_METHOD, FakeSlack

BOT_TOKEN = "xoxb-upload-kill"
SECRET = "upload-kill-secret"
CHANNEL = "C0CHAN0001"
FILES = [
    (11, "chart.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
    (12, "report.pdf", "application/pdf", b"%PDF-1.7 numbers\n" * 300),
]
ROOT = Path(__file__).resolve().parents[3]


# --- the worker (a separate process) ---------------------------------------------------------


async def _deliver(job: dict[str, Any]) -> None:
    from bridge.ports.events import OutgoingFile
    from bridge.settings import AgentSettings
    from channels.slack import plugin
    from channels.slack.settings import SlackChannelSettings
    from tests.support.replies import outgoing_reply

    records = Path(job["records"])

    def append(line: str) -> None:
        with records.open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    async def record_upload(attachment_id: int, platform_file_id: str) -> None:
        await asyncio.to_thread(append, json.dumps([attachment_id, platform_file_id]))

    async def no_dispatch(message: Any) -> Any:
        raise AssertionError(message)

    channel = plugin.build(
        agent=AgentSettings(slug="assistant"),
        settings=SlackChannelSettings(
            bot_token=BOT_TOKEN, signing_secret=SECRET, api_base_url=job["api_url"]
        ),
        dispatch=no_dispatch,
    )
    files = tuple(
        OutgoingFile(
            attachment_id=attachment_id,
            position=position,
            name=name,
            content_type=content_type,
            data=base64.b64decode(data),
            platform_file_id=job["recorded"].get(str(attachment_id)),
        )
        for position, (attachment_id, name, content_type, data) in enumerate(job["files"])
    )
    reply = outgoing_reply(
        channel="slack",
        external_conv_id=f"slack:T0TEAM0001:{CHANNEL}:{job['root']}",
        text="The chart and the report.",
        reply_target={"channel": CHANNEL, "thread_ts": job["root"], "message_ts": job["root"]},
        delivery_key="d-kill-files",
    )
    reply = replace(
        reply,
        files=files,
        record_upload=record_upload,
        in_doubt=job["in_doubt"],
        attempt=job["attempt"],
    )
    await channel.start()
    try:
        ids = await channel.send(reply)
    finally:
        await channel.stop()
    print(json.dumps({"sent": list(ids)}), flush=True)


# --- the test --------------------------------------------------------------------------------


def _recorded(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {str(attachment_id): file_id for attachment_id, file_id in pairs}


async def _start(tmp_path: Path, fake: FakeSlack, root: str, attempt: int) -> Any:
    records = tmp_path / "records.jsonl"
    recorded = _recorded(records)
    job = {
        "api_url": fake.api_url,
        "root": root,
        "records": str(records),
        "recorded": recorded,
        "in_doubt": attempt > 1,
        "attempt": attempt,
        "files": [[a, n, c, base64.b64encode(d).decode()] for a, n, c, d in FILES],
    }
    job_path = tmp_path / f"job{attempt}.json"
    job_path.write_text(json.dumps(job))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.channels.slack.test_uploads_sigkill",
        str(job_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _kill(process: Any) -> None:
    process.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL


async def test_sigkilled_mid_upload_twice_ends_with_each_file_shared_once(
    tmp_path: Path,
) -> None:
    async with FakeSlack(bot_token=BOT_TOKEN, signing_secret=SECRET) as fake:
        fake.add_channel(CHANNEL, "general")
        root = fake.add_message(CHANNEL, text="<@U0BOT00001> the numbers please")["ts"]
        records = tmp_path / "records.jsonl"

        # 1: the first share lands at Slack, but its answer is held: killed before it knows.
        fake.hold_answer_next(method="files.completeUploadExternal")
        first = await _start(tmp_path, fake, root, attempt=1)
        await fake.wait_until(lambda: len(fake.shares) == 1, timeout=30)
        await _kill(first)
        assert list(_recorded(records)) == ["11"] and len(fake.posts) == 1

        # 2: the second file's bytes are held before Slack stores them: killed mid-upload.
        fake.delay_next(1, 3600, method=UPLOAD_METHOD)
        second = await _start(tmp_path, fake, root, attempt=2)
        await fake.wait_until(lambda: len(fake.upload_requests) == 2, timeout=30)
        await _kill(second)
        assert list(_recorded(records)) == ["11"] and len(fake.shares) == 1

        # 3: the restarted delivery finishes without sharing or posting anything twice.
        third = await _start(tmp_path, fake, root, attempt=3)
        out, err = await asyncio.wait_for(third.communicate(), 60)
        assert third.returncode == 0, err.decode()
        recorded = _recorded(records)
        sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]

        thread = [m for m in fake.messages(CHANNEL) if m.get("thread_ts") == root]
        texts = [m for m in thread if m["ts"] != root and m.get("subtype") != "file_share"]
        shared = [m for m in thread if m.get("subtype") == "file_share"]
        assert [m["ts"] for m in texts] == sent and len(fake.posts) == 1
        assert [[f["name"] for f in m["files"]] for m in shared] == [["chart.png"], ["report.pdf"]]
        assert sorted(recorded) == ["11", "12"]
        for attachment_id, name, _type, data in FILES:
            [share] = fake.shares_of(recorded[str(attachment_id)])
            assert (share["channel"], share["thread_ts"], share["title"]) == (CHANNEL, root, name)
            assert fake.uploads[recorded[str(attachment_id)]].data == data
        assert len(fake.shares) == 2


if __name__ == "__main__":
    asyncio.run(_deliver(json.loads(Path(sys.argv[1]).read_text())))
