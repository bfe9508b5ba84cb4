"""Split a long reply into parts that fit a chat platform's per-message length limit."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import NamedTuple, TypeVar

MIN_LIMIT = 20
_FENCE = "```"
_CLOSE = "\n```"
_SEPARATORS = re.compile(r"\n+| ")
_TABLE_RULE = re.compile(r"\|[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")


class _Block(NamedTuple):
    start: int  # first character of the opening fence line
    first: int  # the newline that ends the opening fence line
    last: int  # the newline before the closing fence line (len(text) if unclosed)
    end: int  # just past the closing fence line (len(text) if unclosed)
    fence: str  # the opening fence line, e.g. "```python"


class _Table(NamedTuple):
    start: int  # first character of the header row
    rows: int  # the newline that ends the separator row (the rows follow it)
    end: int  # just past the last row (its newline, or len(text))
    heading: str  # the header row and the separator row, each with its newline


class _Cut(NamedTuple):
    rank: int  # 0 paragraph, 1 line, 2 space, 3 inside a word
    head: int  # the part is text[:head] + close
    tail: int  # the rest is reopen + text[tail:]
    close: str = ""  # "\n```" when the cut splits a code block
    reopen: str = ""  # the block's fence line and "\n", or a split table's heading

    @property
    def size(self) -> int:
        return self.head + len(self.close)


_Span = TypeVar("_Span", _Block, _Table)


def split_text(text: str, *, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, one message each.

    Why: platforms reject or truncate longer messages, so every channel sends a long reply as
    several, split the same way: between paragraphs, else lines, else after a space, and only
    as a last resort inside a word. A coarser boundary wins only if it fills at least
    ``limit // 2``; otherwise the fullest part wins. A fenced code block (from a line starting
    with ```) that fits in one part is never split; a longer one is split at its line breaks
    (inside a line only if the line alone is too long): the part is closed with ``"\n```"`` and
    the next reopened with the block's fence line, e.g. ``"```python\n"`` (plain ``"```\n"``
    if that line is longer than ``limit // 4``), all counted toward the limit. Likewise a
    Markdown table (outside code: a run of consecutive lines starting with ``|`` whose second
    line is a separator row such as ``|---|:-:|``) that fits in one part is never split; a
    longer one is split only between its rows (never after the separator row alone), and the
    next part starts with the table's header row and separator row again, counted toward the
    limit (not repeated if those two lines are longer than ``limit // 2`` together). Only a
    row too long for a part with that heading is cut inside. Lengths are in ``str``
    characters.

    Guarantees: every part has at most ``limit`` characters and is not whitespace-only; an
    empty or whitespace-only ``text`` gives ``[]``, any other ``text`` of at most ``limit``
    characters gives ``[text]``. Removing the added fence lines and repeated table headings
    and joining the parts with the newline(s) cut at each split (nothing at a split after a
    space, which stays at the end of its part, or inside a word) gives back ``text`` exactly,
    except that whitespace that would make up a part on its own is dropped. Raises
    ``ValueError`` if ``limit`` < 20.

    Prefix stability (for replies that grow while streamed): each part is chosen from the first
    ``2 * limit + 1`` characters of what is left to split (the room a code block or table
    starting in the part would need to end in), so the first part of a ``text`` longer than
    ``limit`` depends only on ``text[: 2 * limit + 1]``: once a growing text has that many
    characters, its first part no longer changes. If those characters hold no backtick and no
    line starting with ``|`` (most prose), it depends only on ``text[: limit + 2]``.
    Whitespace-only parts are still dropped afterwards, as above.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = _choose(rest, limit)
        parts.append(rest[: cut.head] + cut.close)
        rest = cut.reopen + rest[cut.tail :]
    parts.append(rest)
    return [part for part in parts if part.strip()]


def _choose(text: str, limit: int) -> _Cut:
    # A block or table starting inside the part fits in one part only if it ends within
    # 2 * limit; nothing past that window may change the part (prefix stability).
    window = text[: 2 * limit + 1]
    blocks = _blocks(window)
    tables = _tables(window, blocks)
    cuts = [c for c in _cuts(text, limit, blocks, tables) if c.tail > 0 and c.size <= limit]

    def preference(cut: _Cut) -> tuple[bool, int, int, int]:
        full = cut.size >= limit // 2  # a coarser boundary wins only if it fills half a part
        return full, -cut.rank if full else 0, cut.size, -cut.rank

    if cuts:
        return max(cuts, key=preference)
    block = _inside(limit, blocks)  # too long for one part: one that fits has a newline before
    if block is not None:
        at = _hard_cut(window, min(limit - len(_CLOSE), block.last - 1), block.first + 2)
        if at is not None:
            return _Cut(3, at, at, _CLOSE, _reopen(block, limit) + "\n")
    # Outside code, or the block's opening fence line alone nearly fills a part (fences break),
    # or a table row too long for a part of its own.
    at = _hard_cut(window, limit, 1) or limit
    return _Cut(3, at, at)


def _hard_cut(text: str, at: int, floor: int) -> int | None:
    """The last position from ``at`` down to ``floor`` that leaves no fence-like line part."""
    for cut in range(at, floor - 1, -1):
        line_end = text.find("\n", cut)
        before = text[text.rfind("\n", 0, cut) + 1 : cut]
        if not _opens(before) and not _opens(text[cut : len(text) if line_end < 0 else line_end]):
            return cut
    return None


def _cuts(text: str, limit: int, blocks: list[_Block], tables: list[_Table]) -> Iterator[_Cut]:
    for match in _SEPARATORS.finditer(text, 0, limit + 1):
        at, end = match.span()
        if end > limit and match.group() != " ":  # the run of newlines may go on past the window
            end = len(text) - len(text[at:].lstrip("\n"))  # (only the rest's start, the tail)
        block = _inside(at, blocks)
        table = _inside(at, tables)
        if table is not None:  # only between rows (a table has no blank line) of a long one
            if match.group() == "\n" and at > table.rows and table.end - table.start > limit:
                yield _Cut(1, at, at + 1, "", _heading(table, limit))
        elif block is None and match.group() == " ":
            yield _Cut(2, at + 1, at + 1, "")
        elif block is None:
            yield _Cut(0 if end - at > 1 else 1, at, end, "")
        elif match.group() != " " and block.end - block.start > limit:
            for newline in range(at, min(end, limit)):
                if block.first < newline < block.last:
                    yield _Cut(1, newline, newline + 1, _CLOSE, _reopen(block, limit) + "\n")


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    opening: tuple[int, int, str] | None = None
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        if opening is None and _opens(line):
            opening = (start, end, line.strip())
        elif opening is not None and _opens(line) and not line.strip().strip("`"):
            blocks.append(_Block(opening[0], opening[1], start - 1, end, opening[2]))
            opening = None
        start = end + 1
    if opening is not None:
        blocks.append(_Block(opening[0], opening[1], len(text), len(text), opening[2]))
    return blocks


def _tables(text: str, blocks: list[_Block]) -> list[_Table]:
    """The tables of ``text`` outside its code blocks; one running to the end of ``text``
    ends there."""
    tables: list[_Table] = []
    run: list[tuple[int, str]] = []  # (start, line) of consecutive lines starting with "|"
    start = 0
    for line in [*text.split("\n"), ""]:  # the empty line ends a run at the end of text
        if line.startswith("|") and _inside(start, blocks) is None:
            run.append((start, line))
        else:
            if len(run) >= 2 and _TABLE_RULE.fullmatch(run[1][1]):
                (first, header), (second, rule) = run[0], run[1]
                last_start, last = run[-1]
                heading = f"{header}\n{rule}\n"
                tables.append(_Table(first, second + len(rule), last_start + len(last), heading))
            run = []
        start += len(line) + 1
    return tables


def _opens(line: str) -> bool:
    """Whether ``line`` is a fence line (one that closes a block, too, if it is only backticks)."""
    fence = line.strip()
    return fence.startswith(_FENCE) and "`" not in fence.lstrip("`")


def _inside(at: int, spans: Sequence[_Span]) -> _Span | None:
    """The block or table (``spans`` in order, none overlapping) with ``at`` strictly inside."""
    index = bisect_right(spans, at, key=lambda span: span.start) - 1
    if index >= 0 and spans[index].start < at < spans[index].end:
        return spans[index]
    return None


def _reopen(block: _Block, limit: int) -> str:
    return block.fence if len(block.fence) <= limit // 4 else _FENCE


def _heading(table: _Table, limit: int) -> str:
    return table.heading if len(table.heading) <= limit // 2 else ""
