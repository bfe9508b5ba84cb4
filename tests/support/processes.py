"""Run the bridge as a real process, the way an operator does, and talk to its database.

Signals, exit codes, stderr and start-up from a config file can only be tested from outside
the process. ``BridgeProcess`` reads stderr in a thread so the pipe never fills, and every
blocking wait goes through ``asyncio.to_thread`` so the test's event loop (and the fakes it
serves, such as the webhook agent) keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridge.flow.ingest import Ingestor
from bridge.infra.metrics import Metrics
from bridge.ports.events import InboundMessage, IngestResult, Sender
from bridge.ports.registry import ChannelRegistry
from bridge.settings import A2ASettings, AgentSettings, DatabaseSettings
from bridge.store.directory import sync_agents
from bridge.store.engine import create_engine, session_factory
from bridge.store.messages import MessageStore
from bridge.store.models import ChatMessage
from bridge.store.wakeups import WorkSignals

START_TIMEOUT = 30.0
LISTENING = re.compile(r"http\.listening url=(http://127\.0\.0\.1:\d+)")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# --- TOML ----------------------------------------------------------------------------------


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as TOML with real ``[table]`` / ``[[array]]`` headers, as an operator writes it.

    Handles the shapes a bridge config has: tables, arrays of tables, strings, numbers, bools
    and arrays of those. The result is parsed back and compared, so a writer bug cannot pass
    for a bridge bug.
    """
    lines: list[str] = []
    _emit_table(lines, (), data, array=False)
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != data:
        raise ValueError(f"cannot write {data!r} as TOML faithfully:\n{text}")
    return text


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _emit_table(
    lines: list[str], path: tuple[str, ...], table: Mapping[str, Any], *, array: bool
) -> None:
    if path:
        dotted = ".".join(_key(part) for part in path)
        lines.append(f"[[{dotted}]]" if array else f"[{dotted}]")
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping) or _is_table_array(v)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested.items():
        if isinstance(value, Mapping):
            _emit_table(lines, (*path, key), value, array=False)
        else:
            for item in value:
                _emit_table(lines, (*path, key), item, array=True)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no TOML for {value!r} here")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


# --- the process ---------------------------------------------------------------------------


def bridge_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``BRIDGE_*`` variable (a developer's own must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(extra or {})
    return env


def bridge_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge", *args]


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """One ``bridge`` command to completion (blocking: call it from sync tests or a thread)."""
    return subprocess.run(
        bridge_command(*args),
        cwd=cwd,
        env=bridge_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class BridgeProcess:
    """A running ``bridge serve``; ``url`` is known once it logged that it listens."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="bridge-stderr", daemon=True)
        self._reader.start()
        self.url = ""

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def log(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._changed:
            return "".join(self._lines)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def _read(self) -> None:
        assert self._popen.stderr is not None
        for raw in iter(self._popen.stderr.readline, b""):
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _wait_for_match(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    if found := pattern.search(line):
                        return found
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    async def wait_for_log(self, pattern: str | re.Pattern[str], within: float = 10.0) -> str:
        """The first log match of ``pattern``; fails with the log if it does not come in time."""
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        found = await asyncio.to_thread(self._wait_for_match, compiled, within)
        if found is None:
            state = "exited" if self.returncode is not None else "still running"
            raise AssertionError(
                f"bridge ({state}, code {self.returncode}) never logged {compiled.pattern!r} "
                f"within {within:g} s; its log:\n{self.log}"
            )
        return found.group(0)

    async def wait_listening(self, within: float = START_TIMEOUT) -> str:
        line = await self.wait_for_log(LISTENING, within)
        found = LISTENING.search(line)
        assert found is not None
        self.url = found.group(1)
        return self.url

    def terminate(self) -> None:
        """SIGTERM: the graceful stop an orchestrator sends."""
        self._popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the process dies on the spot, as in a crash or an OOM kill."""
        self._popen.send_signal(signal.SIGKILL)

    async def wait(self, within: float = 10.0) -> int:
        """The exit code (``-9`` after SIGKILL); fails with the log if it runs on."""
        try:
            code = await asyncio.to_thread(self._popen.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"bridge did not exit within {within:g} s; its log:\n{self.log}"
            ) from None
        await asyncio.to_thread(self._reader.join, 5.0)
        return code

    async def close(self) -> None:
        """Make sure nothing outlives the test."""
        if self._popen.poll() is None:
            self.kill()
        with contextlib.suppress(AssertionError):
            await self.wait()
        if self._popen.stderr is not None:
            self._popen.stderr.close()


def start_process(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> BridgeProcess:
    popen = subprocess.Popen(
        bridge_command(*args),
        cwd=cwd,
        env=bridge_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return BridgeProcess(popen)


@asynccontextmanager
async def serving_bridge(
    config: Path | None,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    start_within: float = START_TIMEOUT,
) -> AsyncIterator[BridgeProcess]:
    """``bridge serve --port 0`` (with ``--config`` if given), once it listens; killed on exit."""
    args = ["serve", "--port", "0"]
    if config is not None:
        args[1:1] = ["--config", str(config)]
    process = start_process(args, cwd=cwd, env=env)
    try:
        await process.wait_listening(start_within)
        yield process
    finally:
        await process.close()


# --- the database, from the test's side ----------------------------------------------------


@dataclass
class BridgeDatabase:
    """The core's own ingest path and queries, run in the test process against the database
    a bridge process uses, so a message can exist before (or without) any bridge running."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    ingestor: Ingestor

    async def ingest(
        self,
        text: str,
        *,
        message_id: str,
        conversation: str = "inmemory:conv-1",
        agent: str = "assistant",
    ) -> IngestResult:
        return await self.ingestor(
            InboundMessage(
                channel="inmemory",
                agent_slug=agent,
                external_conv_id=conversation,
                external_message_id=message_id,
                sender=Sender(external_id="user-1"),
                text=text,
                reply_target={"conversation": conversation},
            )
        )

    async def messages(self) -> list[ChatMessage]:
        async with self.sessions() as db:
            return list((await db.execute(select(ChatMessage).order_by(ChatMessage.id))).scalars())

    async def message(self, message_id: int) -> ChatMessage:
        async with self.sessions() as db:
            found = await db.get(ChatMessage, message_id)
        assert found is not None, f"no message {message_id}"
        return found


@asynccontextmanager
async def bridge_database(
    database_url: str, agents: list[dict[str, Any]]
) -> AsyncIterator[BridgeDatabase]:
    """A migrated database, its agents synced as a bridge with these ``agents`` would."""
    configured = [AgentSettings.model_validate(agent) for agent in agents]
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        sessions = session_factory(engine)
        directory = await sync_agents(sessions, configured)
        ingestor = Ingestor(
            store=MessageStore(sessions=sessions, signals=WorkSignals()),
            agents=directory,
            metrics=Metrics(),
            budget=A2ASettings(),
            capabilities=ChannelRegistry().capabilities,
        )
        try:
            yield BridgeDatabase(engine=engine, sessions=sessions, ingestor=ingestor)
        finally:
            await ingestor.stop()
    finally:
        await engine.dispose()


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll a sync or async predicate until true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)
