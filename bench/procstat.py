"""What a service process costs, read from /proc: its CPU time and its resident memory."""

from __future__ import annotations

import asyncio
import os
import time


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: field 3 (state) is fields[0]; utime and stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Peak and half-way resident memory of a process, from /proc."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def read(self) -> int:
        with open(f"/proc/{self._pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    async def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.read()))
            await asyncio.sleep(0.25)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
