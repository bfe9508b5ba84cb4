"""A reply's files, uploaded natively into its conversation and thread, exactly once.

``files.upload`` is retired; Slack's external upload has three steps and no idempotency key
(repeating any of them makes another file or another share):

1. ``files.getUploadURLExternal(filename, length)`` -> ``upload_url``, ``file_id``;
2. POST the bytes to ``upload_url`` (no token; HTTP 200 means stored);
3. ``files.completeUploadExternal(files=[{id, title}], channel_id, thread_ts)`` shares it.

The file id is recorded (``Reply.record_upload``) between steps 2 and 3, so a recorded id always
names an upload whose bytes are at Slack and that needs at most sharing. A crash before the
record leaves an unshared upload that Slack discards; the next attempt uploads again, and no
one ever sees the orphan. A file with a recorded id is never uploaded again: ``files.info``
says whether an earlier completion already shared it into this channel (then nothing is done)
and otherwise it is completed. If Slack no longer knows it (``file_not_found``: an upload left
unshared too long), the delivery fails permanently with that reason rather than upload again:
the core keeps the first recorded id and refuses another.

Each file is completed on its own, in order, after the text: one file message each in the
reply's thread, and a failure names exactly one file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.infra.logs import log_event
from bridge.ports.errors import DeliveryError
from bridge.ports.events import OutgoingFile, Reply, UploadRecorder
from channels.slack.outbound import api_error, error_code

logger = logging.getLogger(__name__)

UPLOAD_REFUSALS = frozenset(
    {
        "missing_argument",
        "file_uploads_disabled",
        "file_upload_size_restricted",
        "file_type_not_allowed",
        "storage_limit_reached",
        "alt_txt_too_large",
        "invalid_channel",
        "posting_to_channel_denied",
        "channels_limit_exceeded",
        "file_uploads_except_images_disabled",
    }
)
"""Upload errors that no retry fixes (with the outbound module's general ones)."""
FILE_GONE = "file_not_found"
"""``files.info`` of an upload Slack discarded (or never stored). From completeUploadExternal
it is left transient: the next attempt asks ``files.info`` and decides."""


def shared_in(document: dict[str, Any], channel: str) -> bool:
    """Whether a ``files.info`` file object is already shared into ``channel``."""
    shares = document.get("shares") or {}
    return any(channel in (shares.get(kind) or {}) for kind in ("public", "private"))


class SlackUploads:
    def __init__(self, *, client: AsyncWebClient, http: aiohttp.ClientSession) -> None:
        self._client = client
        self._http = http

    async def send(
        self, reply: Reply, *, channel: str, thread_ts: str | None, posted_before: bool
    ) -> None:
        """Share every file of ``reply`` into ``channel`` (and ``thread_ts``), in order.

        ``posted_before``: the text went out already, so any failure leaves the delivery in
        doubt (the next attempt looks before it posts or shares again).
        """
        if not reply.files:
            return
        record = reply.record_upload
        if record is None:
            raise DeliveryError("a reply with files came without record_upload", permanent=True)
        for file in sorted(reply.files, key=lambda f: f.position):
            await self._one(
                file, record=record, channel=channel, thread_ts=thread_ts, doubt=posted_before
            )
            posted_before = True
        log_event(logger, "slack.files_shared", message=reply.message_id, files=len(reply.files))

    async def _one(
        self,
        file: OutgoingFile,
        *,
        record: UploadRecorder,
        channel: str,
        thread_ts: str | None,
        doubt: bool,
    ) -> None:
        file_id = file.platform_file_id
        if file_id is not None:
            state = await self._state(file_id, channel=channel)
            if state == "shared":
                log_event(logger, "slack.file_already_shared", file=file_id)
                return
            if state == "gone":
                # Never uploaded again once recorded (the core keeps the first id): an upload
                # Slack discarded before it was shared is reported, not silently redone.
                raise DeliveryError(
                    f"slack: the upload of {file.name!r} ({file_id}) expired before it was shared",
                    permanent=True,
                    in_doubt=doubt,
                )
        else:
            file_id = await self._upload(file, doubt=doubt)
            await record(file.attachment_id, file_id)
        await _api(
            "files.completeUploadExternal",
            self._client.files_completeUploadExternal(
                files=[{"id": file_id, "title": file.name}],
                channel_id=channel,
                thread_ts=thread_ts or None,
            ),
            doubt=doubt,
            unanswered_in_doubt=True,
        )

    async def _state(self, file_id: str, *, channel: str) -> str:
        """``shared`` (into ``channel``), ``unshared`` or ``gone`` (Slack does not know it)."""
        try:
            info = await self._client.files_info(file=file_id)
        except SlackApiError as error:
            if error_code(error) == FILE_GONE:
                return "gone"
            raise _error(error, doubt=True, method="files.info") from None
        except (aiohttp.ClientError, TimeoutError) as failure:
            raise DeliveryError(f"slack files.info: {failure!r}", in_doubt=True) from None
        return "shared" if shared_in(dict(info.get("file") or {}), channel) else "unshared"

    async def _upload(self, file: OutgoingFile, *, doubt: bool) -> str:
        """Steps 1 and 2: the id of a new upload holding ``file.data``, not yet shared."""
        answer = await _api(
            "files.getUploadURLExternal",
            self._client.files_getUploadURLExternal(filename=file.name, length=len(file.data)),
            doubt=doubt,
        )
        url, file_id = str(answer["upload_url"]), str(answer["file_id"])
        try:
            # No token: the URL itself authorizes the upload (and may be another host).
            async with self._http.post(
                url, data=file.data, headers={"Content-Type": "application/octet-stream"}
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as failure:
            raise DeliveryError(f"slack file upload: {failure!r}", in_doubt=doubt) from None
        if status != 200:
            # Nothing to share yet: the next attempt uploads again (new id), no duplicate.
            raise DeliveryError(f"slack file upload: HTTP {status}", in_doubt=doubt)
        return file_id


async def _api(
    method: str, call: Awaitable[Any], *, doubt: bool, unanswered_in_doubt: bool = False
) -> Any:
    """``call``'s answer. Unanswered, a share may have happened (``unanswered_in_doubt``);
    an unanswered step 1 shares nothing, so it is in doubt only if the text went out."""
    try:
        return await call
    except SlackApiError as error:
        raise _error(error, doubt=doubt, method=method) from None
    except (aiohttp.ClientError, TimeoutError) as failure:
        in_doubt = doubt or unanswered_in_doubt
        raise DeliveryError(f"slack {method}: {failure!r}", in_doubt=in_doubt) from None


def _error(error: SlackApiError, *, doubt: bool, method: str) -> DeliveryError:
    code = error_code(error)
    if code in UPLOAD_REFUSALS:
        return DeliveryError(f"slack {method}: {code}", permanent=True, in_doubt=doubt)
    return api_error(error, posted_before=doubt, method=method)
