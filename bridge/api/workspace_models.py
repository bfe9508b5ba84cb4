"""Bodies of the operator's workspace routes. Like ``models``, they are the contract: handlers
validate with them and the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.api.access_models import SLUG_PATTERN
from bridge.ports.events import storable_text


class _Strict(BaseModel):
    """Unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class CreateWorkspace(_Strict):
    slug: str = Field(
        pattern=SLUG_PATTERN, description="Lowercase letters, digits, `-` and `_` (like agents)."
    )
    name: str | None = Field(
        default=None, max_length=200, description="A display name; the slug if absent."
    )

    @field_validator("name")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return None if value is None else storable_text(value)


class WorkspaceOut(_Strict):
    slug: str
    name: str
    created_at: datetime
    deleted_at: datetime | None = Field(
        description="When it was deleted (its sessions and tokens with it); null if it is not."
    )
    agents: int = Field(description="Agents recorded in it (by `bridge serve`).")
    active_tokens: int = Field(description="Its tokens that work (not revoked).")


class WorkspaceList(_Strict):
    items: list[WorkspaceOut] = Field(description="Every workspace, deleted ones too, by slug.")
