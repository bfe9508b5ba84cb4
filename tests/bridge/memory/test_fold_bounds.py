"""How much one fold takes, and how the summary and the fold request are shaped (pure
functions: no database, no model)."""

from __future__ import annotations

from bridge.memory.prompt import (
    FOLD_INSTRUCTION,
    MAX_MESSAGE_CHARS,
    cut_summary,
    fold_messages,
)
from bridge.memory.store import Dropped, whole_positions


def row(position: int, content: str = "x", role: str = "user") -> Dropped:
    return Dropped(position=position, role=role, content=content, sender_name=None)


def test_a_fold_takes_whole_positions_within_the_message_bound() -> None:
    rows = [row(1), row(1, role="assistant"), row(3), row(3, role="assistant"), row(5)]
    assert whole_positions(rows, max_messages=3, max_chars=1000) == rows[:2]
    assert whole_positions(rows, max_messages=4, max_chars=1000) == rows[:4]
    assert whole_positions(rows, max_messages=10, max_chars=1000) == rows


def test_a_fold_stops_at_the_character_bound_but_never_takes_nothing() -> None:
    rows = [row(1, "a" * 50), row(1, "b" * 50, role="assistant"), row(3, "c" * 10)]
    assert whole_positions(rows, max_messages=10, max_chars=60) == rows[:2]
    assert whole_positions(rows, max_messages=10, max_chars=110) == rows
    huge = [row(7, "z" * 500), row(9, "y")]
    assert whole_positions(huge, max_messages=10, max_chars=100) == huge[:1]


def test_a_position_longer_than_the_bound_is_cut_to_it() -> None:
    rows = [row(1), row(1), row(1), row(2)]
    assert whole_positions(rows, max_messages=2, max_chars=1000) == rows[:2]


def test_the_fold_request_names_the_speakers_and_cuts_long_texts() -> None:
    dropped = [
        Dropped(position=1, role="user", content="hi", sender_name="Ada"),
        Dropped(position=1, role="assistant", content="hello", sender_name=None),
        Dropped(position=3, role="user", content="q" * (MAX_MESSAGE_CHARS + 10), sender_name=None),
    ]
    system, user = fold_messages(previous=None, dropped=dropped, agent_name="Bot", max_chars=500)
    assert system == {"role": "system", "content": FOLD_INSTRUCTION.format(limit=500)}
    assert "500 characters" in system["content"]
    head, transcript = user["content"].split("\n\nNew messages, oldest first:\n")
    assert head == "Summary so far:\n(none yet)"
    lines = transcript.split("\n")
    assert lines[:2] == ["Ada: hi", "Bot: hello"]
    assert lines[2] == "User: " + "q" * MAX_MESSAGE_CHARS + " […]"
    _, again = fold_messages(
        previous="Ada said hi.", dropped=dropped[:1], agent_name="Bot", max_chars=500
    )
    assert (
        again["content"] == "Summary so far:\nAda said hi.\n\nNew messages, oldest first:\nAda: hi"
    )


def test_a_summary_over_the_limit_is_cut_to_it() -> None:
    assert cut_summary("  short  ", 100) == "short"
    long = " ".join(["word"] * 100)
    cut = cut_summary(long, 100)
    assert len(cut) <= 100 and cut.endswith("…") and cut.startswith("word word")
    assert cut_summary("x" * 300, 100) == "x" * 99 + "…"
