"""``[retention]``: how long message content and idle sessions are kept (default: forever)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_days: float | None = Field(default=None, gt=0)
    """Message content older than this is deleted; the row stays as a tombstone."""
    idle_session_days: float | None = Field(default=None, gt=0)
    """Sessions without a message for this long are soft-deleted (archived)."""
    interval_seconds: float = Field(default=300.0, gt=0)
    """How often the retention job runs (one process at a time)."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Rows changed per transaction: no lock is held for long."""
