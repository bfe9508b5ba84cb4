"""One contender process: ``python -m tests.support.contend URL INDEX COUNT START_AT``.

Waits until the wall-clock START_AT, then ingests COUNT first messages for one conversation
at once, from ten shared senders, and exits non-zero on any error.
"""

from __future__ import annotations

import asyncio
import sys
import time

from tests.support.core import core, memory_message

SENDERS = 10


async def contend(url: str, index: int, count: int, start_at: float) -> None:
    async with core(url) as bridge:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(
            *(
                bridge.ingest(
                    memory_message(
                        f"hello {index}-{n}",
                        message_id=f"p{index}-m{n}",
                        sender=f"sender-{n % SENDERS}",
                        conversation="inmemory:contended",
                    )
                )
                for n in range(count)
            )
        )


if __name__ == "__main__":
    url, index, count, start_at = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    asyncio.run(contend(url, index, count, start_at))
