"""``[agents.memory]``: a rolling summary of what the history window no longer holds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summarize: bool = False
    """Fold messages the window drops into a summary sent ahead of it (``openai`` backend)."""
    max_summary_chars: int = Field(default=2_000, ge=100, le=50_000)
    """The summary is asked to stay under this length and cut to it when it does not."""
