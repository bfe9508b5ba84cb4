"""A reply's files on Feishu, each posted exactly once as its own image or file message.

Feishu takes a file in two steps: an upload (``/im/v1/images`` or ``/im/v1/files``) that
answers a key, then a message that shows the key. Uploads have no idempotency key, messages
have one (``uuid``: at most one message per uuid within an hour). So the key of each upload is
kept (``Reply.record_upload``) before the message that shows it is sent, and the message's
uuid is derived from the delivery key and the file's position: an attempt after a crash that
followed the upload sends the recorded key instead of uploading again, and one after a crash
that followed the send gets Feishu's first message back instead of a second one.

A file Feishu would refuse for its size (or an empty one) is not uploaded: the reply's text
says so instead, the same words on every attempt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Literal

from bridge.ports.events import OutgoingFile, Reply
from channels.feishu.client import INVALID_TOKEN_CODES, FeishuClient, FeishuError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_FILE_BYTES = 30 * 1024 * 1024
MAX_UUID_CHARS = 50
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
FILE_TYPES_BY_EXTENSION = {
    ".opus": "opus",
    ".pdf": "pdf",
    ".doc": "doc",
    ".docx": "doc",
    ".xls": "xls",
    ".xlsx": "xls",
    ".ppt": "ppt",
    ".pptx": "ppt",
}
FILE_TYPES_BY_CONTENT_TYPE = {
    "audio/opus": "opus",
    "audio/ogg; codecs=opus": "opus",
    "application/pdf": "pdf",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "ppt",
}
"""An mp4 stays ``stream``: Feishu shows an ``mp4`` upload only as a ``media`` message, which
needs a cover image as well; as a file it is still there to download."""

Kind = Literal["image", "file"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """How one file goes to Feishu."""

    file: OutgoingFile
    kind: Kind
    file_type: str
    """For the file endpoint; ``image`` for an image."""

    @property
    def msg_type(self) -> str:
        if self.kind == "image":
            return "image"
        return "audio" if self.file_type == "opus" else "file"

    def content(self, key: str) -> dict[str, str]:
        return {"image_key": key} if self.kind == "image" else {"file_key": key}


def plan(files: tuple[OutgoingFile, ...]) -> tuple[list[Upload], list[str]]:
    """The files to send, and a note for each one Feishu would refuse (too large, empty)."""
    uploads: list[Upload] = []
    notes: list[str] = []
    for file in sorted(files, key=lambda item: item.position):
        upload = _upload_of(file)
        limit = MAX_IMAGE_BYTES if upload.kind == "image" else MAX_FILE_BYTES
        if file.platform_file_id is None and len(file.data) > limit:
            notes.append(f"[file: {file.name} not sent: larger than Feishu allows]")
        elif file.platform_file_id is None and not file.data:
            notes.append(f"[file: {file.name} not sent: empty]")
        else:
            uploads.append(upload)
    return uploads, notes


def with_notes(reply: Reply, notes: list[str]) -> Reply:
    """The reply with the notes of files not sent under its text."""
    if not notes:
        return reply
    text = "\n".join([reply.text, *notes]) if reply.text else "\n".join(notes)
    return replace(reply, text=text)


async def upload_all(
    client: FeishuClient, reply: Reply, uploads: list[Upload]
) -> tuple[list[tuple[Upload, str]], list[str]]:
    """Each file with its key as ``image:<key>`` / ``file:<key>`` (an earlier attempt's
    recorded key, or a new upload recorded before it is used), and a note for each file Feishu
    refused for good (its format, say): the text is not held back for it."""
    ready: list[tuple[Upload, str]] = []
    notes: list[str] = []
    for upload in uploads:
        file = upload.file
        recorded = file.platform_file_id
        if recorded is None or recorded.partition(":")[0] != upload.kind:
            try:
                key = await _upload(client, upload)
            except FeishuError as error:
                if not _refused_for_good(error):
                    raise
                notes.append(f"[file: {file.name} not sent: Feishu refused it ({error.code})]")
                continue
            recorded = f"{upload.kind}:{key}"
            if reply.record_upload is not None:
                await reply.record_upload(file.attachment_id, recorded)
        ready.append((upload, recorded))
    return ready, notes


async def _upload(client: FeishuClient, upload: Upload) -> str:
    file = upload.file
    if upload.kind == "image":
        return await client.upload_image(
            name=file.name, content_type=file.content_type, data=file.data
        )
    return await client.upload_file(
        file_type=upload.file_type, name=file.name, content_type=file.content_type, data=file.data
    )


def _refused_for_good(error: FeishuError) -> bool:
    return (
        error.code is not None
        and not error.in_doubt
        and error.retry_after is None
        and error.code not in INVALID_TOKEN_CODES
    )


async def send_all(
    client: FeishuClient, reply: Reply, ready: list[tuple[Upload, str]]
) -> list[str]:
    """One message per file, where the text went (a reply to the same message, in its thread,
    or a new message in the chat): their message ids."""
    target = reply.reply_target
    ids: list[str] = []
    for upload, recorded in ready:
        content = upload.content(recorded.partition(":")[2])
        uuid = file_uuid(reply.delivery_key, upload.file.position)
        if target.get("message_id"):
            message = await client.reply(
                message_id=target["message_id"],
                msg_type=upload.msg_type,
                content=content,
                in_thread=bool(target.get("in_thread")),
                uuid=uuid,
            )
        else:
            message = await client.send(
                chat_id=target["chat_id"], msg_type=upload.msg_type, content=content, uuid=uuid
            )
        ids.append(str(message["message_id"]))
    return ids


def file_uuid(delivery_key: str, position: int) -> str:
    """The ``uuid`` of a file's message: stable across attempts, distinct from the text parts'
    (``<key>-<index>``), at most 50 characters (a longer key is hashed)."""
    suffix = f"-f{position}"
    if len(delivery_key) + len(suffix) > MAX_UUID_CHARS:
        digest = hashlib.sha256(delivery_key.encode()).hexdigest()
        delivery_key = digest[: MAX_UUID_CHARS - len(suffix)]
    return delivery_key + suffix


def _upload_of(file: OutgoingFile) -> Upload:
    content_type = file.content_type.split(";")[0].strip().lower()
    if content_type in IMAGE_TYPES:
        return Upload(file=file, kind="image", file_type="image")
    extension = PurePath(file.name).suffix.lower()
    file_type = (
        FILE_TYPES_BY_CONTENT_TYPE.get(file.content_type.strip().lower())
        or FILE_TYPES_BY_CONTENT_TYPE.get(content_type)
        or FILE_TYPES_BY_EXTENSION.get(extension)
        or "stream"
    )
    return Upload(file=file, kind="file", file_type=file_type)
