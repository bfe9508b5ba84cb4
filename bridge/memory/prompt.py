"""What a fold asks the model: an instruction, the summary so far and only the messages the
window dropped since the last fold, as a transcript with the speakers' names."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.memory.store import Dropped

FOLD_INSTRUCTION = (
    "You keep the running summary of a conversation, so that the assistant taking part in it "
    "remembers what no longer fits in its context. Update the summary with the new messages: "
    "keep what will matter later (who the people are, what they asked for, facts, preferences, "
    "decisions, promises, open questions), leave out small talk, and keep what the summary "
    "already says unless the new messages change it. Answer with the updated summary only, "
    "in plain text, in at most {limit} characters."
)
NO_SUMMARY = "(none yet)"
SUMMARY_HEADING = "Summary so far:"
MESSAGES_HEADING = "New messages, oldest first:"
MAX_MESSAGE_CHARS = 4_000
"""One message's text is cut to this in a fold: a summary needs the gist, not a whole paste."""


def speaker(row: Dropped, *, agent_name: str) -> str:
    """The name a transcript line starts with: the sender's, or what they are."""
    if row.sender_name:
        return row.sender_name
    return agent_name if row.role == "assistant" else "User"


def fold_messages(
    *, previous: str | None, dropped: Sequence[Dropped], agent_name: str, max_chars: int
) -> list[dict[str, str]]:
    """The fold request's ``messages``: the instruction, then one user message with the
    summary so far and the transcript (``Name: text`` a message, oldest first)."""
    lines = []
    for row in dropped:
        text = row.content
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + " […]"
        lines.append(f"{speaker(row, agent_name=agent_name)}: {text}")
    transcript = "\n".join(lines)
    prompt = f"{SUMMARY_HEADING}\n{previous or NO_SUMMARY}\n\n{MESSAGES_HEADING}\n{transcript}"
    return [
        {"role": "system", "content": FOLD_INSTRUCTION.format(limit=max_chars)},
        {"role": "user", "content": prompt},
    ]


def cut_summary(text: str, max_chars: int) -> str:
    """The model's summary, cut to ``max_chars`` (at a word where one is near) when longer."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars * 3 // 4:
        cut = cut[:space]
    return cut.rstrip() + "…"
