"""A process that only delivers one reply with files through the Discord channel, so a test
can SIGKILL it mid-upload and run it again (``python -m tests.channels.discord.upload_process
'<json>'``). The JSON names the fake's endpoints, the target, the delivery key and the files
(name, content type, hex data); the message ids sent are printed as one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bridge.ports.events import OutgoingFile, Reply
from bridge.settings import AgentSettings
from channels.discord import plugin
from channels.discord.adapter import DiscordChannel
from channels.discord.settings import DiscordChannelSettings
from tests.support.processes import wait_until


async def _no_inbound(item: object) -> Any:
    return None


async def main(spec: dict[str, Any]) -> None:
    channel = plugin.build(
        agent=AgentSettings(slug="assistant"),
        settings=DiscordChannelSettings(**spec["section"]),
        dispatch=_no_inbound,
    )
    assert isinstance(channel, DiscordChannel)
    await channel.start()
    try:
        await wait_until(lambda: channel.status().ready, within=20, what="the client ready")
        files = tuple(
            OutgoingFile(
                attachment_id=10 + n,
                position=n,
                name=f["name"],
                content_type=f["content_type"],
                data=bytes.fromhex(f["hex"]),
            )
            for n, f in enumerate(spec["files"])
        )
        reply = Reply(
            message_id=1,
            session_id=1,
            delivery_key=spec["delivery_key"],
            agent_slug="assistant",
            channel="discord",
            external_conv_id=spec["conv"],
            text=spec["text"],
            reply_target=spec["target"],
            in_doubt=spec["in_doubt"],
            attempt=spec["attempt"],
            files=files,
        )
        ids = await channel.send(reply)
        print(json.dumps(list(ids)), flush=True)
    finally:
        await channel.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
