"""System packages the tests need (PostgreSQL, Chromium), installed with apt when missing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

LOG_TAIL_LINES = 40


class AptFailed(RuntimeError):
    pass


@contextlib.contextmanager
def install_lock() -> Iterator[None]:
    """Serialise apt runs between parallel pytest workers (dpkg has one global lock)."""
    lock_path = Path(tempfile.gettempdir()) / "chat-bridge-apt-install.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])


def run_apt(args: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else ""
        raise AptFailed(f"`{' '.join(args)}` timed out; last output:\n{_tail(output)}") from exc
    if result.returncode != 0:
        raise AptFailed(
            f"`{' '.join(args)}` failed with exit code {result.returncode}; "
            f"last output:\n{_tail(result.stdout)}"
        )
