"""split_text: message-sized parts that keep paragraphs, lines, words, code blocks and tables
whole."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.text_split import split_text


def fence_is_open_at_end(part: str) -> bool:
    """Whether a fenced code block is still open at the end of ``part``."""
    open_ = False
    for line in part.split("\n"):
        fence = line.strip()
        if not open_ and fence.startswith("```") and "`" not in fence.lstrip("`"):
            open_ = True
        elif open_ and fence.startswith("```") and not fence.strip("`"):
            open_ = False
    return open_


TABLE_RULE = re.compile(r"\|[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")


def without_table_heading(part: str) -> str | None:
    """``part`` without the table header row and separator row it starts with, if it does."""
    lines = part.split("\n", 2)
    if len(lines) == 3 and lines[0].startswith("|") and TABLE_RULE.fullmatch(lines[1]):
        return lines[2]
    return None


def reassembles(parts: list[str], text: str) -> bool:
    """Whether the parts, once the fence lines added at code splits and the table headings
    repeated at table splits are taken off, occur in ``text`` in order and cover it, separated
    only by whitespace."""

    def match(index: int, pos: int, reopened: bool) -> bool:
        if index == len(parts):
            return not text[pos:].strip()
        part = parts[index]
        if reopened:
            fence, newline, part = part.partition("\n")
            if not (fence.startswith("```") and newline):
                return False
        bare = None if reopened else without_table_heading(part)
        gap = len(text) - len(text[pos:].lstrip())
        for start in range(pos, gap + 1):
            for body in (part, bare):
                if body is None:
                    continue
                if text.startswith(body, start) and match(index + 1, start + len(body), False):
                    return True
                closed = body.endswith("\n```") and text.startswith(body[:-4], start)
                if closed and match(index + 1, start + len(body) - 4, True):
                    return True
        return False

    return match(0, 0, False)


def test_short_text_is_returned_unchanged() -> None:
    assert split_text("Hello\n\nworld ", limit=20) == ["Hello\n\nworld "]
    assert split_text("x" * 20, limit=20) == ["x" * 20]
    assert split_text("", limit=20) == []
    assert split_text(" \n\n ", limit=20) == []


def test_limit_below_20_is_rejected() -> None:
    with pytest.raises(ValueError):
        split_text("hello", limit=19)


def test_splits_between_paragraphs() -> None:
    paragraphs = [f"Paragraph {n} has a line.\nAnd a second line." for n in range(4)]
    text = "\n\n".join(paragraphs)
    parts = split_text(text, limit=100)
    assert parts == ["\n\n".join(paragraphs[:2]), "\n\n".join(paragraphs[2:])]


def test_extra_blank_lines_at_a_split_are_cut_away() -> None:
    text = "a" * 15 + "\n\n\n\n" + "b" * 15
    assert split_text(text, limit=20) == ["a" * 15, "b" * 15]


def test_splits_between_lines() -> None:
    lines = [f"line number {n:02}" for n in range(9)]  # 14 characters each
    parts = split_text("\n".join(lines), limit=50)
    assert parts == ["\n".join(lines[n : n + 3]) for n in (0, 3, 6)]


def test_splits_after_a_space_when_there_is_no_line_break() -> None:
    text = " ".join(["word"] * 30)
    parts = split_text(text, limit=40)
    assert "".join(parts) == text
    assert [len(part) for part in parts] == [40, 40, 40, 29]
    assert all(set(part.split()) == {"word"} for part in parts)


def test_hard_splits_a_word_longer_than_the_limit() -> None:
    assert split_text("x" * 100, limit=30) == ["x" * 30, "x" * 30, "x" * 30, "x" * 10]


def test_a_code_block_that_fits_is_never_split() -> None:
    intro = "Here is the code:"
    block = "```python\ndef f():\n    return 1\n\n\ndef g():\n    return 2\n```"
    text = f"{intro}\n\n{block}\n\nThat is all."
    parts = split_text(text, limit=len(block) + 5)
    assert parts == [intro, block, "That is all."]


def test_a_code_block_longer_than_the_limit_is_closed_and_reopened() -> None:
    code = "\n".join(f"print({n})" for n in range(40))
    text = f"Run this:\n\n```python\n{code}\n```\n\nDone."
    parts = split_text(text, limit=60)
    assert len(parts) > 2
    assert all(len(part) <= 60 for part in parts)
    assert parts[0].startswith("Run this:\n\n```python\nprint(0)\n")
    assert all(part.endswith("\n```") for part in parts[:-1])
    assert all(part.startswith("```python\n") for part in parts[1:])
    assert not any(fence_is_open_at_end(part) for part in parts)
    assert parts[-1].endswith("\n```\n\nDone.")
    assert reassembles(parts, text)
    bodies = [part.removeprefix("```python\n") for part in parts]
    bodies[:-1] = [body.removesuffix("\n```") for body in bodies[:-1]]
    assert "\n".join(bodies) == text
    assert all(line.startswith("print(") for part in bodies[1:-1] for line in part.split("\n"))


def test_a_code_line_longer_than_the_limit_is_split_inside_the_block() -> None:
    text = "```\n" + "y" * 50 + "\n```"
    parts = split_text(text, limit=20)
    assert all(len(part) <= 20 for part in parts)
    assert all(part.startswith("```\n") and part.endswith("\n```") for part in parts)
    assert "".join(part[4:-4] for part in parts) == "y" * 50


def test_slack_sized_reply_with_paragraphs_and_a_code_block() -> None:
    sentence = "The bridge delivers every message exactly once, even after a crash. "
    paragraphs = [(sentence * 6).strip() for _ in range(20)]  # 413 characters each
    code = "```python\n" + "\n".join(f"result_{n} = compute({n})" for n in range(90)) + "\n```"
    text = "\n\n".join([*paragraphs[:7], code, *paragraphs[7:]])
    assert 10_000 <= len(text) <= 11_000
    parts = split_text(text, limit=3900)
    assert len(parts) == 3
    assert all(len(part) <= 3900 for part in parts)
    assert "\n\n".join(parts) == text
    assert sum(code in part for part in parts) == 1


WORDS = st.text(alphabet="abcdefghij", min_size=1, max_size=60)
SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", "\n\n\n", " \n", "\n \n"])
INFO = st.sampled_from(["", "py", "python", "javascript"])
CODE_LINE = st.one_of(
    st.lists(WORDS, max_size=5).map(" ".join), st.just("```python"), st.just("    x = 1")
)
BLOCKS = st.builds(
    lambda info, lines: f"\n```{info}\n" + "\n".join(lines) + "\n```\n",
    INFO,
    st.lists(CODE_LINE, max_size=30),
)


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, bool]:
    """A random reply and whether all of its code fences are balanced."""
    stray_fence = draw(st.booleans())
    piece = st.one_of(WORDS, SEPARATORS, BLOCKS, *([st.just("\n```\n")] if stray_fence else []))
    return "".join(draw(st.lists(piece, max_size=80))), not stray_fence


@settings(max_examples=500, deadline=None)
@given(reply=replies(), limit=st.integers(min_value=20, max_value=200))
def test_parts_fit_and_lose_nothing(reply: tuple[str, bool], limit: int) -> None:
    text, balanced = reply
    parts = split_text(text, limit=limit)
    assert all(0 < len(part) <= limit and part.strip() for part in parts)
    assert reassembles(parts, text)
    if len(text) <= limit:
        assert parts == ([text] if text.strip() else [])
    assert not any(part.endswith("\n") for part in parts[:-1])
    assert not any(part.startswith("\n") for part in parts[1:])
    if balanced:
        assert not any(fence_is_open_at_end(part) for part in parts)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="`ab \n\t", max_size=400), limit=st.integers(min_value=20, max_value=60)
)
def test_any_text_at_all_fits_and_loses_nothing(text: str, limit: int) -> None:
    """Stray backticks and odd fences may give odd markdown, but never an overlong or lost part."""
    parts = split_text(text, limit=limit)
    assert all(0 < len(part) <= limit and part.strip() for part in parts)
    assert reassembles(parts, text)


# --- tables -------------------------------------------------------------------------------

HEADER = "| name | value |"
RULE = "|------|------:|"


def table(rows: int, *, first: int = 0) -> str:
    """The heading and rows ``first`` to ``rows - 1``."""
    return "\n".join([HEADER, RULE, *(f"| row {n:02} | {n * 7:5} |" for n in range(first, rows))])


def test_a_table_that_fits_is_never_split() -> None:
    intro = "Here are the numbers, as a table for you:"
    numbers = table(4)  # 16 + 16 + 4 * 18 characters
    text = f"{intro}\n{numbers}\nThat is all, thank you."
    parts = split_text(text, limit=len(numbers) + 5)
    assert parts == [intro, numbers, "That is all, thank you."]


def test_a_long_table_is_split_between_rows_and_repeats_its_heading() -> None:
    text = "Results:\n\n" + table(12) + "\n\nDone."
    parts = split_text(text, limit=110)  # heading (33) + at most 4 rows (18 each, + newline)
    assert parts == [
        "Results:\n\n" + table(3),
        table(7, first=3),
        table(11, first=7),
        table(12, first=11) + "\n\nDone.",
    ]
    assert reassembles(parts, text)


def test_a_continued_table_counts_its_heading_toward_the_limit() -> None:
    parts = split_text(table(30), limit=100)
    assert all(len(part) <= 100 for part in parts)
    assert all(part.startswith(f"{HEADER}\n{RULE}\n| row ") for part in parts)
    rows = [line for part in parts for line in part.split("\n")[2:]]
    assert rows == table(30).split("\n")[2:]  # each row once, whole, in order


def test_a_heading_longer_than_half_the_limit_is_not_repeated() -> None:
    header = "| " + " | ".join(f"column {n}" for n in range(4)) + " |"  # 45 characters
    rule = "|" + "---|" * 4  # heading: 45 + 17 + 2 newlines = 64 > 100 // 2
    rows = [f"| {n} | {n} | {n} | {n} |" for n in range(10)]
    text = "\n".join([header, rule, *rows])
    parts = split_text(text, limit=100)
    assert parts[0].startswith(f"{header}\n{rule}\n| 0 |")
    assert all(part.startswith("| ") and header not in part for part in parts[1:])
    assert "\n".join(parts) == text  # split between rows only


def test_pipe_lines_in_code_or_without_a_separator_row_are_not_a_table() -> None:
    pipes = "\n".join(f"| just a line {n} |" for n in range(6))  # 17 characters each
    lines = pipes.split("\n")
    assert split_text(pipes, limit=45) == ["\n".join(lines[n : n + 2]) for n in (0, 2, 4)]
    code = "```\n" + table(6) + "\n```"
    parts = split_text(code, limit=60)
    assert all(part.startswith("```\n") and part.endswith("\n```") for part in parts)
    assert not any(part.startswith(f"```\n{HEADER}") for part in parts[1:])


CELL = st.text(alphabet="abcdefghij ", min_size=1, max_size=6)


@st.composite
def tables(draw: st.DrawFn, name: int) -> str:
    """Table ``name``: its header and rows say whose they are (``| Hn | ... |``, ``| rn.i |``)."""
    width = draw(st.integers(min_value=1, max_value=2))
    rows = draw(st.lists(st.lists(CELL, min_size=width, max_size=width), max_size=25))
    header = f"| H{name} |" + " h |" * width
    rule = "|---|" + "---|" * width
    body = [f"| r{name}.{n} | " + " | ".join(cells) + " |" for n, cells in enumerate(rows)]
    return "\n\n" + "\n".join([header, rule, *body]) + "\n\n"


@st.composite
def replies_with_tables(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.one_of(WORDS, SEPARATORS, BLOCKS, st.none()), max_size=60))
    # None: a table, each with its own name (10**6 + index: the longest names).
    return "".join(
        draw(tables(10**6 + index)) if piece is None else piece
        for index, piece in enumerate(pieces)
    )


def table_runs(part: str) -> list[list[str]]:
    """The runs of consecutive lines starting with ``|`` in ``part``, outside code."""
    runs: list[list[str]] = []
    run: list[str] = []
    in_code = False
    for line in [*part.split("\n"), ""]:
        fence = line.strip()
        if not in_code and fence.startswith("```") and "`" not in fence.lstrip("`"):
            in_code = True
        elif in_code and fence.startswith("```") and not fence.strip("`"):
            in_code = False
        if line.startswith("|") and not in_code:
            run.append(line)
        elif run:
            runs.append(run)
            run = []
    return runs


@settings(max_examples=400, deadline=None)
@given(text=replies_with_tables(), limit=st.integers(min_value=80, max_value=300))
def test_tables_are_split_only_between_rows_under_their_heading(text: str, limit: int) -> None:
    """A heading (at most 36 characters) is repeated from a limit of 72, and a row (at most
    33) fits under it from 70: from 80 on, no row may be cut."""
    parts = split_text(text, limit=limit)
    assert all(0 < len(part) <= limit and part.strip() for part in parts)
    assert reassembles(parts, text)
    assert not any(fence_is_open_at_end(part) for part in parts)
    lines = {line for part in parts for line in part.split("\n")}
    rows = [line for line in text.split("\n") if line.startswith("| r")]
    assert all(row in lines for row in rows)  # no row cut in half (every row is unique)
    for part in parts:
        for run in table_runs(part):
            header, rule, *body = run
            name = header.split()[1].removeprefix("H")
            assert header.startswith(f"| H{name} |")
            assert TABLE_RULE.fullmatch(rule)
            assert all(row.startswith(f"| r{name}.") for row in body)
            whole = sum(row.startswith(f"| r{name}.") for row in rows)
            assert body or not whole  # a split never leaves a heading without rows


def first_part(text: str, limit: int) -> str:
    return split_text(text, limit=limit)[0]


@settings(max_examples=400, deadline=None)
@given(
    text=replies_with_tables(),
    more=replies_with_tables(),
    limit=st.integers(min_value=20, max_value=150),
)
def test_the_first_part_depends_only_on_the_first_2_limit_plus_1(
    text: str, more: str, limit: int
) -> None:
    """A reply that grows (streamed) keeps its first part once it has 2 * limit + 1
    characters. (It starts with a letter: a whitespace-only first part would be dropped.)"""
    text = "x" + text
    if len(text) < 2 * limit + 1:
        text += "y" * (2 * limit + 1 - len(text))
    assert first_part(text, limit) == first_part(text + more, limit)


PROSE = st.lists(st.one_of(WORDS, SEPARATORS), max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=PROSE, more=PROSE, limit=st.integers(min_value=20, max_value=150))
def test_without_code_or_tables_the_first_part_depends_on_limit_plus_2(
    text: str, more: str, limit: int
) -> None:
    text = "x" + text
    if len(text) < limit + 2:
        text += "y" * (limit + 2 - len(text))
    assert first_part(text, limit) == first_part(text + more, limit)


def test_a_hard_cut_does_not_look_past_the_window() -> None:
    """A cut inside a word avoids leaving a fence-like line part (" ```yyy" would open a code
    block), but decides it from the window: the end of the line, still to come while a reply
    is streamed, cannot change the first part."""
    start = "x" * 40 + " ```" + "y" * 37  # 2 * 40 + 1 characters, no line break
    grown = start + "`"  # now " ```yyy…`" is no fence line after all
    assert first_part(start, 40) == first_part(grown, 40) == "x" * 39
