"""The tables of access and limits: approved pairings, pairing codes, refusal counts and
once-a-day notices (README, "Access and limits")."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, Index, Integer, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.base import Base, BigId, UTCDateTime, utcnow


class AccessGrant(Base):
    """An identity approved for an agent by pairing (``bridge access approve``): it counts as
    listed in the agent's ``access.allow``."""

    __tablename__ = "access_grants"
    __table_args__ = (UniqueConstraint("agent_id", "identity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    identity: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PairingCode(Base):
    """The one-time code an unknown user got in a DM; one live code per identity and agent."""

    __tablename__ = "pairing_codes"
    __table_args__ = (UniqueConstraint("agent_id", "identity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    identity: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Refusal(Base):
    """Refused messages are not stored: they are counted here, per hour, for the usage API."""

    __tablename__ = "refusals"
    __table_args__ = (
        UniqueConstraint("agent_id", "identity", "external_conv_id", "reason", "hour"),
        Index(None, "agent_id", "hour"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    identity: Mapped[str] = mapped_column(String(300))
    external_conv_id: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(32))
    hour: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)


class AccessNotice(Base):
    """A refused user was told ``denied_text`` on that UTC day: at most once a day."""

    __tablename__ = "access_notices"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    identity: Mapped[str] = mapped_column(String(300), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)


GRANTS = cast(Table, AccessGrant.__table__)
PAIRING_CODES = cast(Table, PairingCode.__table__)
REFUSALS = cast(Table, Refusal.__table__)
NOTICES = cast(Table, AccessNotice.__table__)
