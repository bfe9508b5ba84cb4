"""Opaque keyset cursors: base64url JSON of the last row's sort key, tagged with what they page
so that one list's cursor is refused by another."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from bridge.api.errors import ApiError

MAX_ID = 2**63 - 1


def _bad() -> ApiError:
    return ApiError(400, "bad_cursor", "the cursor is not one this API gave out")


def _encode(payload: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode(cursor: str, kind: str, size: int) -> list[object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad() from None
    if not isinstance(payload, list) or len(payload) != size or payload[0] != kind:
        raise _bad()
    return payload


def _valid_id(value: object) -> int:
    if type(value) is not int or not 0 < value <= MAX_ID:
        raise _bad()
    return value


def session_cursor(last_message_at: datetime, session_id: int) -> str:
    return _encode(["s", last_message_at.isoformat(), session_id])


def read_session_cursor(cursor: str) -> tuple[datetime, int]:
    _, moment, session_id = _decode(cursor, "s", 3)
    try:
        at = datetime.fromisoformat(str(moment))
    except ValueError:
        raise _bad() from None
    if at.tzinfo is None:
        raise _bad()
    return at, _valid_id(session_id)


def message_cursor(message_id: int) -> str:
    return _encode(["m", message_id])


def read_message_cursor(cursor: str) -> int:
    return _valid_id(_decode(cursor, "m", 2)[1])


def path_id(raw: str, what: str = "session") -> int:
    """An id from the URL; anything that cannot be an id is simply not found."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not 0 < int(raw) <= MAX_ID:
        raise ApiError(404, "not_found", f"no such {what}")
    return int(raw)
