"""The files of the message answered, as the openai backend shows them to the model.

Only files whose type is in ``files.model_content_types`` and whose content is stored are
shown: an image as an ``image_url`` content part holding a ``data:`` URL, a text file
(``text/*``, ``application/json``) inline after the message text as a fenced block headed by
its name. The inlined text counts against the agent's ``history_chars``: the files come
first (they belong to the message answered), a file that does not fit is cut with a note,
and the oldest history is left out to make room. Every other file is one line that names it
and says why it is not shown, so the model can still mention it. Reading a file never fails
the answer: a missing object is shown as "content missing".
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.agents.base import AgentAttachment, AgentRequest, HistoryMessage
from bridge.infra.logs import log_event

logger = logging.getLogger(__name__)

TEXT_TYPES = frozenset({"application/json"})
"""Types shown inline besides ``text/*``."""
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShownFiles:
    """What the model is shown of the message's files."""

    text: str = ""
    """Appended to the message text: fenced blocks and one line per file not shown."""
    images: tuple[dict[str, Any], ...] = ()
    """``image_url`` content parts, in the message's order."""
    inline_chars: int = 0
    """Characters of file text inlined: taken from the history budget."""


NO_FILES = ShownFiles()


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in TEXT_TYPES


def is_image(media_type: str) -> bool:
    return media_type.startswith("image/")


def described(attachment: AgentAttachment) -> str:
    size = "size unknown" if attachment.size is None else f"{attachment.size} bytes"
    return f"{attachment.name} ({attachment.media_type}, {size})"


def not_shown(attachment: AgentAttachment, reason: str) -> str:
    return f"[attachment: {described(attachment)} not shown: {reason}]"


def _why_not(attachment: AgentAttachment) -> str | None:
    """Why the model is not shown the content (None: it may be)."""
    if attachment.read is None:
        if attachment.state == "pending":
            return "not fetched yet"
        return attachment.reason or f"not stored ({attachment.state})"
    media_type = attachment.media_type
    if not attachment.for_model:
        return "its type is not sent to the model"
    if not (is_image(media_type) or is_text(media_type)):
        return "the model is shown images and text files only"
    return None


async def _read(attachment: AgentAttachment, request: AgentRequest) -> bytes | str:
    """The bytes, or why there are none."""
    assert attachment.read is not None
    try:
        return await attachment.read()
    except LookupError:
        reason = "content missing"
    except Exception as error:  # a store outage must not cost the answer
        reason = "content unavailable"
        log_event(
            logger,
            "agent.file_unreadable",
            level=logging.WARNING,
            agent=request.agent_slug,
            message=request.message_id,
            file=attachment.id,
            error=type(error).__name__,
        )
    return reason


def fenced(name: str, text: str, *, note: str | None = None) -> str:
    """``text`` in a fence longer than any backtick run inside it, headed by the file name."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    block = f"{name}:\n{fence}\n{text}\n{fence}"
    return block if note is None else f"{block}\n{note}"


async def show_files(request: AgentRequest) -> ShownFiles:
    """Read what may be shown of ``request.attachments`` (see the module docstring)."""
    if not request.attachments:
        return NO_FILES
    budget = request.context_chars
    blocks: list[str] = []
    images: list[dict[str, Any]] = []
    used = 0
    for attachment in request.attachments:
        reason = _why_not(attachment)
        content = reason if reason is not None else await _read(attachment, request)
        if isinstance(content, str):
            blocks.append(not_shown(attachment, content))
        elif is_image(attachment.media_type):
            encoded = base64.b64encode(content).decode("ascii")
            url = f"data:{attachment.media_type};base64,{encoded}"
            images.append({"type": "image_url", "image_url": {"url": url}})
        else:
            text = content.decode("utf-8", errors="replace")
            room = len(text) if budget is None else max(0, budget - used)
            if len(text) <= room:
                blocks.append(fenced(attachment.name, text))
            else:
                blocks.append(
                    fenced(
                        attachment.name,
                        text[:room],
                        note=f"[{attachment.name} cut: the first {room} of {len(text)} "
                        "characters are shown]",
                    )
                )
                text = text[:room]
            used += len(text)
    return ShownFiles(text="\n\n".join(blocks), images=tuple(images), inline_chars=used)


def user_content(text: str, files: ShownFiles) -> str | list[dict[str, Any]]:
    """The new message's ``content``: a string, or text and image parts when there are
    images."""
    if files.text:
        text = f"{text}\n\n{files.text}" if text else files.text
    if not files.images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return [*parts, *files.images]


def fit_history(
    history: Sequence[HistoryMessage], *, budget: int | None, files: ShownFiles
) -> Sequence[HistoryMessage]:
    """The newest part of ``history`` that fits the budget the files left (all of it when
    there is no budget or no inlined text)."""
    if budget is None or not files.inline_chars:
        return history
    room = budget - files.inline_chars
    kept = len(history)
    for item in reversed(history):
        room -= len(item.content)
        if room < 0:
            break
        kept -= 1
    return history[kept:]
