"""A process killed with SIGKILL while Discord holds the answer to its upload: the message with
the files was created, the process never heard back. Run again with the same delivery key, the
channel sends the same multipart create with the same ``nonce`` (``enforce_nonce``) and Discord
returns the stored message: exactly one message carries the files.

The process only delivers (``upload_process``): a Reply with an image and a file, built as the
delivery step builds it, through the real Discord channel and discord.py, against the fake."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from channels.discord.uploads import files_nonce
from tests.fakes.discord import DEFAULT_GUILD_ID, DEFAULT_THREAD_ID, FakeDiscord
from tests.support.discord import discord_section
from tests.support.processes import wait_until

ROOT = Path(__file__).resolve().parents[3]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
CSV = b"day,count\n" + b"mon,3\n" * 50
KEY = "delivery-sigkill-files"
HELD_SECONDS = 30.0
"""The fake answers the upload only after this: the process is killed long before."""


def _spec(fake: FakeDiscord, *, in_doubt: bool, attempt: int) -> str:
    spec: dict[str, Any] = {
        "section": discord_section(fake, status_reactions=False),
        "delivery_key": KEY,
        "conv": f"discord:{DEFAULT_GUILD_ID}:{DEFAULT_THREAD_ID}",
        "text": "The numbers, with a chart.",
        "target": {"channel_id": DEFAULT_THREAD_ID, "guild_id": DEFAULT_GUILD_ID},
        "in_doubt": in_doubt,
        "attempt": attempt,
        "files": [
            {"name": "chart.png", "content_type": "image/png", "hex": PNG.hex()},
            {"name": "numbers.csv", "content_type": "text/csv", "hex": CSV.hex()},
        ],
    }
    return json.dumps(spec)


async def _start(spec: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.channels.discord.upload_process",
        spec,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigkill_mid_upload_leaves_exactly_one_message_with_the_files() -> None:
    async with FakeDiscord() as fake:
        fake.hold_next_upload_answer(HELD_SECONDS)
        first = await _start(_spec(fake, in_doubt=False, attempt=1))
        try:
            await wait_until(
                lambda: len(fake.posts_by()) == 2, within=30, what="the upload stored, unanswered"
            )
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGKILL)
        await first.wait()
        assert first.returncode == -signal.SIGKILL
        text_post, files_post = fake.posts_by()
        [held] = fake.uploads()
        assert held.status == 0  # never answered: the process died first

        second = await _start(_spec(fake, in_doubt=True, attempt=2))
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err.decode()
        ids = json.loads(out.decode().strip().splitlines()[-1])

        # Discord holds one message with the files, in the thread; the retry got it back.
        assert ids == [text_post["id"], files_post["id"]]
        assert fake.posts_by() == [text_post, files_post]
        assert files_post["channel_id"] == DEFAULT_THREAD_ID
        attached = [
            (a["filename"], a["content_type"], a["size"]) for a in files_post["attachments"]
        ]
        assert attached == [
            ("chart.png", "image/png", len(PNG)),
            ("numbers.csv", "text/csv", len(CSV)),
        ]
        uploads = fake.uploads()
        assert len(uploads) == 2
        assert {u.json["nonce"] for u in uploads} == {files_nonce(KEY, 0)}
        assert uploads[1].status == 200 and uploads[1].response["id"] == files_post["id"]
        assert [f.data for f in uploads[1].files] == [PNG, CSV]
        assert files_post["id"] in [hit["id"] for hit in fake.nonce_hits]
