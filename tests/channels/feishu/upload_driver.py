"""A process that delivers one Feishu reply with an image and a file, then exits: what the
SIGKILL test runs, kills and runs again (``python -m tests.channels.feishu.upload_driver
STATE``).

``STATE`` is a JSON file: the ``[agents.feishu]`` section, the message to reply to, and the
upload keys recorded so far. ``record_upload`` writes each key there (fsync, then an atomic
rename) before the channel goes on, as the core keeps it in the database, and the next run
hands them back as ``platform_file_id``. Prints ``sent <ids JSON>`` when done.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from bridge.ports.contract import ChannelContext
from bridge.ports.events import OutgoingFile, Reply
from bridge.settings import AgentSettings
from channels.feishu.adapter import FeishuChannel
from channels.feishu.settings import FeishuChannelSettings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 512
DELIVERY_KEY = "5a1e0c2b9d8f7e6a4b3c2d1e"
TEXT = "The chart and the report, once each."
FILES = (
    (101, 0, "chart.png", "image/png", PNG),
    (102, 1, "report.pdf", "application/pdf", PDF),
)


def _write(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


async def main(path: Path, state: dict[str, Any]) -> None:
    recorded: dict[str, str] = state.setdefault("recorded", {})

    async def record(attachment_id: int, platform_file_id: str) -> None:
        recorded[str(attachment_id)] = platform_file_id
        _write(path, state)

    async def dispatch(event: object) -> Any:
        raise AssertionError(f"nothing is dispatched here: {event}")

    channel = FeishuChannel(
        context=ChannelContext(
            agent=AgentSettings(slug="assistant"),
            settings=FeishuChannelSettings.model_validate(state["section"]),
            dispatch=dispatch,  # type: ignore[arg-type]
        )
    )
    await channel.start()
    try:
        files = tuple(
            OutgoingFile(
                attachment_id=attachment_id,
                position=position,
                name=name,
                content_type=content_type,
                data=data,
                platform_file_id=recorded.get(str(attachment_id)),
            )
            for attachment_id, position, name, content_type, data in FILES
        )
        attempt = int(state.get("attempt", 0)) + 1
        state["attempt"] = attempt
        _write(path, state)
        reply = Reply(
            message_id=1,
            session_id=1,
            delivery_key=DELIVERY_KEY,
            agent_slug="assistant",
            channel="feishu",
            external_conv_id="x",
            text=TEXT,
            reply_target={"message_id": state["asked"], "in_thread": "1"},
            in_doubt=attempt > 1,
            attempt=attempt,
            files=files,
            record_upload=record,
        )
        ids = await channel.send(reply)
        print("sent " + json.dumps(list(ids)), flush=True)
    finally:
        await channel.stop()


if __name__ == "__main__":
    state_path = Path(sys.argv[1])
    asyncio.run(main(state_path, json.loads(state_path.read_text(encoding="utf-8"))))
