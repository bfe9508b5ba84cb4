"""The files of ``POST /api/v1/agents/{agent}/send``: decoded and checked against
``[files]`` before anything is stored, since the caller is there to be told (422 with the
reason, nothing stored)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from bridge.api.errors import ApiError
from bridge.api.send_models import SendFile
from bridge.files.intake import Received, safe_content_type, safe_name, too_large_reason
from bridge.files.settings import FilesSettings


def received_files(items: Sequence[SendFile], settings: FilesSettings) -> list[Received]:
    """Each file decoded, hashed and checked; ApiError 422 for the first that cannot go."""
    if len(items) > settings.max_files_per_message:
        raise ApiError(
            422,
            "too_many_files",
            f"attachments: more than {settings.max_files_per_message} files in one message",
        )
    files = []
    for index, item in enumerate(items):
        where = f"attachments[{index}]"
        text = item.data_base64
        if len(text) * 3 // 4 - text[-2:].count("=") > settings.max_bytes:
            raise ApiError(
                422, "file_too_large", f"{where}: {too_large_reason(settings.max_bytes)}"
            )
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid_file", f"{where}.data_base64: not base64") from None
        files.append(
            Received(
                name=safe_name(item.name),
                content_type=safe_content_type(item.content_type),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                data=data,
            )
        )
    return files
