"""The file run of ``make bench``: web uploads and downloads of a 5 MiB file.

One bridge process on PostgreSQL, the echo agent on the web channel, files in the local file
store. A token is created with ``bridge token create`` and a web session opened through the
API, as a program using the bridge would. Each upload is a message posted as
``multipart/form-data`` with one ``file`` part of fresh random bytes (so every upload is a new
object in the store, never a deduplicated one); each download is ``GET /api/v1/files/{id}`` of
a file uploaded here, checked against its SHA-256. Both are run one at a time, then a few at a
time; throughput is the bytes moved over the wall time of the phase, latency runs from sending
the request to its last byte received, and the bridge's CPU (from /proc) is counted over all
uploads and over all downloads.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import percentile
from bench.procstat import cpu_seconds
from bench.scenarios import Sizes, migrated, progress
from tests.support.postgres import PostgresCluster
from tests.support.processes import BridgeProcess, run_cli, serving_bridge, write_toml

MIB = 2**20
FILE_BYTES = 5 * MIB
CONCURRENCY = 4
AGENT = "bench"


@dataclass(frozen=True, kw_only=True)
class Phase:
    """One run of requests: each request's latency, and the phase's wall time and bytes."""

    latencies: list[float]
    seconds: float
    size: int

    def figures(self) -> dict[str, float]:
        mib = len(self.latencies) * self.size / MIB
        return {
            "requests": len(self.latencies),
            "seconds": self.seconds,
            "mib_per_s": mib / self.seconds,
            "p50_ms": percentile(self.latencies, 0.50) * 1000,
            "max_ms": max(self.latencies) * 1000,
        }


class FileClient:
    """Uploads and downloads through the bridge's HTTP API with one token."""

    def __init__(self, *, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._http = http
        self._base = base_url + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def new_session(self) -> int:
        async with self._http.post(
            self._base + "/sessions", json={"agent": AGENT}, headers=self._headers
        ) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"creating a web session: {response.status} {body}")
            return int(body["id"])

    async def upload(self, session_id: int, content: bytes, *, name: str) -> dict[str, Any]:
        """Post a message with ``content`` as its one file; the stored attachment."""
        # File names raw in the part header, as browsers send them (README).
        form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        form.add_field("text", name)
        form.add_field("file", content, filename=name, content_type="application/octet-stream")
        async with self._http.post(
            f"{self._base}/sessions/{session_id}/messages", data=form, headers=self._headers
        ) as response:
            body = await response.json()
        if response.status != 202:
            raise RuntimeError(f"upload {name}: {response.status} {body}")
        (attachment,) = body["attachments"]
        if attachment["state"] != "stored" or attachment["size"] != len(content):
            raise RuntimeError(f"upload {name}: not stored whole: {attachment}")
        return dict(attachment)

    async def download(self, url: str) -> bytes:
        async with self._http.get(
            self._base.removesuffix("/api/v1") + url, headers=self._headers
        ) as response:
            data = await response.read()
        if response.status != 200:
            raise RuntimeError(f"download {url}: {response.status} {data[:200]!r}")
        return data


async def timed_phase(
    count: int, *, concurrency: int, size: int, request: Callable[[int], Awaitable[None]]
) -> Phase:
    """``request(n)`` for n < count, at most ``concurrency`` at a time; each one timed."""
    latencies: list[float] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            began = time.perf_counter()
            await request(n)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Phase(latencies=latencies, seconds=time.perf_counter() - started, size=size)


def files_config(path: Path, *, database_url: str, store: Path) -> Path:
    """The echo agent with no channel section: the web channel only."""
    return write_toml(
        path,
        {
            "database": {"url": database_url, "pool_size": 20},
            "storage": {"path": str(store)},
            "agents": [{"slug": AGENT}],
        },
    )


async def create_token(config: Path, *, cwd: Path) -> str:
    """``bridge token create``, as an operator runs it; the token is its last line."""
    created = await asyncio.to_thread(
        run_cli, "token", "create", "bench-files", "--config", str(config), cwd=cwd
    )
    if created.returncode != 0:
        raise RuntimeError(f"bridge token create: {created.stderr}")
    return created.stdout.strip().splitlines()[-1]


async def upload_run(sizes: Sizes, *, work: Path, cluster: PostgresCluster) -> dict[str, Any]:
    count = sizes.upload_files
    progress(f"postgres: {count} uploads and downloads of a 5 MiB file, 1 then 4 at a time")
    url = await migrated(cluster.create_database("bench_files"))
    config = files_config(work / "files.toml", database_url=url, store=work / "files")
    token = await create_token(config, cwd=work)
    async with (
        serving_bridge(config, cwd=work, start_within=60) as process,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
    ):
        client = FileClient(http=http, base_url=process.url, token=token)
        figures = await _measure(client, process, count=count)
    return {"files": figures}


async def _measure(client: FileClient, process: BridgeProcess, *, count: int) -> dict[str, Any]:
    session_id = await client.new_session()
    stored: list[dict[str, Any]] = []

    async def upload(content: bytes) -> None:
        attachment = await client.upload(session_id, content, name=f"bench-{len(stored)}.bin")
        if attachment["sha256"] != hashlib.sha256(content).hexdigest():
            raise RuntimeError(f"upload stored other bytes: {attachment}")
        stored.append(attachment)

    async def download(attachment: dict[str, Any]) -> None:
        data = await client.download(attachment["url"])
        if len(data) != attachment["size"]:
            raise RuntimeError(f"download of {attachment['id']}: {len(data)} bytes")
        checked.append((data, attachment["sha256"]))

    checked: list[tuple[bytes, str]] = []
    # Warm-up, not measured: first connections, the first file written and read.
    await upload(os.urandom(FILE_BYTES))
    await download(stored[0])
    phases: dict[str, Phase] = {}
    cpu = {"upload": 0.0, "download": 0.0}
    for concurrency in (1, CONCURRENCY):
        # Fresh random bytes for every upload, made before the clock starts.
        contents = [os.urandom(FILE_BYTES) for _ in range(count)]

        async def upload_one(n: int, contents: list[bytes] = contents) -> None:
            await upload(contents[n])

        before = cpu_seconds(process.pid)
        phases[f"upload_c{concurrency}"] = await timed_phase(
            count, concurrency=concurrency, size=FILE_BYTES, request=upload_one
        )
        cpu["upload"] += cpu_seconds(process.pid) - before
    # Each download fetches one of the files uploaded above (all distinct objects).
    measured = stored[1:]
    for concurrency in (1, CONCURRENCY):

        async def download_one(n: int, offset: int = concurrency) -> None:
            await download(measured[(n + offset) % len(measured)])

        checked.clear()
        before = cpu_seconds(process.pid)
        phases[f"download_c{concurrency}"] = await timed_phase(
            count, concurrency=concurrency, size=FILE_BYTES, request=download_one
        )
        cpu["download"] += cpu_seconds(process.pid) - before
        for data, sha256 in checked:
            if hashlib.sha256(data).hexdigest() != sha256:
                raise RuntimeError("a download returned other bytes than were uploaded")
    moved_mib = 2 * count * FILE_BYTES / MIB  # per direction: both concurrencies
    return {
        "file_mib": FILE_BYTES / MIB,
        "files": count,
        "concurrency": CONCURRENCY,
        **{name: phase.figures() for name, phase in phases.items()},
        "upload_cpu_ms_per_mib": cpu["upload"] / moved_mib * 1000,
        "download_cpu_ms_per_mib": cpu["download"] / moved_mib * 1000,
    }
