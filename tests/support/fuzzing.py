"""What the fuzz tests of every endpoint share: bounded Hypothesis runs and raw JSON builders."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

MIB = 1024 * 1024


def fuzz_settings(examples: int, *, shrink: bool = True) -> Callable[[Any], Any]:
    """Bounded, reproducible runs: the whole file stays well under a minute."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        # One bridge serves every example of a test: the function-scoped fixtures are meant.
        suppress_health_check=list(HealthCheck),
    )


def compact(document: Any) -> bytes:
    # surrogatepass: a lone surrogate becomes bytes that are no UTF-8, as garbage may be.
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return raw.encode("utf-8", "surrogatepass")


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw_json(kind: str, size: int) -> bytes:
    """``size`` levels of nested arrays or objects, or an integer of ``size`` digits."""
    if kind == "[":
        return deep(size)
    if kind == "{":
        return b'{"a":' * size + b"1" + b"}" * size
    return b"9" * size


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


RAW_MARK = re.compile(rb'"@@raw:([\[{9]):([0-9]+)@@"')


async def ten_megabytes() -> AsyncIterator[bytes]:
    chunk = b"x" * 65_536
    for _ in range(10 * MIB // len(chunk)):
        yield chunk


@st.composite
def garbled(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` cut, overwritten, extended or re-encoded at the byte level."""
    how = draw(st.sampled_from(["keep", "cut", "flip", "insert", "bom", "tail", "latin1"]))
    if how == "keep" or not raw:
        return raw
    at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if how == "cut":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if how == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "tail":
        return raw + draw(st.sampled_from([b"\xff", b"\xc3", b"}", b"]", b",", b"\x00", b"x"]))
    return raw.decode("utf-8", "replace").encode("latin-1", errors="replace") + b"\xe9"
