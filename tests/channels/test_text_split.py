"""split_text: message-sized parts that keep paragraphs, lines, words and code blocks whole."""

from __future__ import annotations

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


def reassembles(parts: list[str], text: str) -> bool:
    """Whether the parts, once the fence lines added at code splits are taken off, occur in
    ``text`` in order and cover it, separated only by whitespace."""

    def match(index: int, pos: int, reopened: bool) -> bool:
        if index == len(parts):
            return not text[pos:].strip()
        part = parts[index]
        if reopened:
            fence, newline, part = part.partition("\n")
            if not (fence.startswith("```") and newline):
                return False
        gap = len(text) - len(text[pos:].lstrip())
        for start in range(pos, gap + 1):
            if text.startswith(part, start) and match(index + 1, start + len(part), False):
                return True
            closed = part.endswith("\n```") and text.startswith(part[:-4], start)
            if closed and match(index + 1, start + len(part) - 4, True):
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
