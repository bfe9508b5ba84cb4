"""Reply files on Discord: uploaded natively, in multipart Create Message, exactly once.

On Discord the upload *is* the message create (``payload_json`` + ``files[n]``, which
discord.py builds from ``discord.File``): there is no separate upload step to record, and the
message's ``nonce`` with ``enforce_nonce`` makes a repeat within minutes return the message an
earlier attempt created, files and all. So the files go after the reply's text, in messages of
their own (at most 10 files and 25 MiB a message), each with a nonce derived from the delivery
key and its place: a retry, in doubt or after a crash, gets the same messages back instead of
posting them again. They never ride on a text part, whose nonce a live reply may already have
used for a message without files.

A file larger than the channel allows (10 MiB, more in boosted guilds: ``Guild.filesize_limit``)
is not sent; the text says so. One Discord refuses as too large all the same (40005, 50045) is
reported the same way, in a message posted with that batch's nonce.
"""

from __future__ import annotations

import hashlib
import io
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import discord

from bridge.infra.logs import log_event
from bridge.ports.events import OutgoingFile, Reply
from channels.discord.live import deliver, reference_to
from channels.discord.outbound import NONCE_LENGTH, delivery_error

logger = logging.getLogger(__name__)

DEFAULT_FILE_LIMIT = 10 * 1024 * 1024
"""Per file, for bots in DMs and unboosted guilds (discord.py's
``DEFAULT_FILE_SIZE_LIMIT_BYTES``)."""
MAX_FILES_PER_MESSAGE = 10
"""More is Discord's 30015."""
MAX_REQUEST_BYTES = 25 * 1024 * 1024
"""A message's files together stay under this (unless one file alone is larger and allowed)."""
TOO_LARGE_CODES = frozenset({40005, 50045})
MAX_NAME_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePlan:
    """How a reply's files go out: the messages that carry them, and those not sent."""

    batches: tuple[tuple[OutgoingFile, ...], ...]
    refused: tuple[OutgoingFile, ...]


def plan_files(files: Sequence[OutgoingFile], *, limit: int) -> FilePlan:
    """Deterministic for the same files and limit, so every attempt posts the same batches
    under the same nonces."""
    batches: list[tuple[OutgoingFile, ...]] = []
    refused: list[OutgoingFile] = []
    batch: list[OutgoingFile] = []
    batch_bytes = 0
    for file in sorted(files, key=lambda f: f.position):
        size = len(file.data)
        if size > limit:
            refused.append(file)
            continue
        if batch and (
            len(batch) == MAX_FILES_PER_MESSAGE or batch_bytes + size > MAX_REQUEST_BYTES
        ):
            batches.append(tuple(batch))
            batch, batch_bytes = [], 0
        batch.append(file)
        batch_bytes += size
    if batch:
        batches.append(tuple(batch))
    return FilePlan(batches=tuple(batches), refused=tuple(refused))


def refusal_note(files: Sequence[OutgoingFile]) -> str:
    return "\n".join(f"[file: {f.name} not sent: larger than Discord allows]" for f in files)


def with_refusals(text: str, refused: Sequence[OutgoingFile]) -> str:
    if not refused:
        return text
    note = refusal_note(refused)
    return f"{text.rstrip()}\n\n{note}" if text.strip() else note


def files_nonce(delivery_key: str, batch: int) -> str:
    """Stable across attempts and distinct from every text part's nonce."""
    digest = hashlib.sha256(f"{delivery_key}:files:{batch}".encode()).hexdigest()
    return digest[:NONCE_LENGTH]


def upload_name(name: str) -> str:
    """The name Discord shows: no folders, no control characters, never empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return clean[-MAX_NAME_CHARS:] or "file"


def file_limit(client: discord.Client | None, target: Mapping[str, str]) -> int:
    """The largest file the reply's channel takes: its guild's (boosts raise it) when the
    client has the guild, else Discord's default."""
    guild_id = target.get("guild_id")
    guild = client.get_guild(int(guild_id)) if client is not None and guild_id else None
    if guild is None:
        return DEFAULT_FILE_LIMIT
    return max(guild.filesize_limit, DEFAULT_FILE_LIMIT)


async def deliver_with_files(
    channel: discord.PartialMessageable, reply: Reply, *, limit: int, agent: str
) -> list[str]:
    """The reply's text (see :func:`.live.deliver`), then its files; idempotent as a whole.
    Returns every message id in order: the text's parts, then the files' messages."""
    plan = plan_files(reply.files, limit=limit)
    for file in plan.refused:
        _log_refused(file, agent=agent, limit=limit, why="larger than the channel allows")
    if plan.refused:
        reply = replace(reply, text=with_refusals(reply.text, plan.refused))
    ids = await deliver(channel, reply)
    text_ids = len(ids)
    try:
        for index, batch in enumerate(plan.batches):
            reference = reference_to(reply.reply_target) if index == 0 and not text_ids else None
            sent = await _post_batch(
                channel,
                batch,
                nonce=files_nonce(reply.delivery_key, index),
                reference=reference,
                agent=agent,
                limit=limit,
            )
            ids.append(str(sent.id))
    except Exception as error:
        failure = delivery_error(error)
        if ids:  # the retry's nonces return what is out already
            failure.in_doubt = True
        raise failure from error
    return ids


async def _post_batch(
    channel: discord.PartialMessageable,
    batch: Sequence[OutgoingFile],
    *,
    nonce: str,
    reference: discord.MessageReference | None,
    agent: str,
    limit: int,
) -> discord.Message:
    mentions = discord.AllowedMentions(replied_user=False)
    try:
        return await channel.send(
            files=[discord.File(io.BytesIO(f.data), filename=upload_name(f.name)) for f in batch],
            nonce=nonce,
            reference=reference,  # type: ignore[arg-type]
            allowed_mentions=mentions,
        )
    except discord.HTTPException as error:
        if error.code not in TOO_LARGE_CODES and error.status != 413:
            raise
    # Nothing was created under this nonce: it carries the note instead, once.
    for file in batch:
        _log_refused(file, agent=agent, limit=limit, why="Discord refused it as too large")
    return await channel.send(
        refusal_note(batch),
        nonce=nonce,
        reference=reference,  # type: ignore[arg-type]
        allowed_mentions=mentions,
    )


def _log_refused(file: OutgoingFile, *, agent: str, limit: int, why: str) -> None:
    log_event(
        logger,
        "discord.file_not_sent",
        level=logging.WARNING,
        agent=agent,
        attachment=file.attachment_id,
        file=file.name,
        size=len(file.data),
        limit=limit,
        reason=why,
    )
