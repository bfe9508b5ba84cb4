"""The final delivery of a Feishu reply, and the status reactions on the message it answers.

Each part that a live card shows gets its exact text and leaves streaming mode; each other part
is replied as a Markdown post with the part's ``uuid`` (if that uuid already sent a card, a
card this reply started but never recorded, that card is finished instead); cards beyond the
final part count are deleted. Every step is repeatable, so a retry (in doubt or not, in this
process or another) ends with the same single set of messages.

Status: ``OnIt`` when answering begins, then ``DONE`` or ``CrossMark``. Which reactions are
there is read from Feishu each time (another process may have added them), and a reaction is
best effort: it never fails a delivery.
"""

from __future__ import annotations

from typing import Any

from bridge.ports.events import Reply, ReplyOutcome
from channels.feishu.client import FeishuClient, FeishuError
from channels.feishu.live import CardStreams, LiveCard, card_reference, delivery_error, log_failure
from channels.feishu.outbound import post_content, reply_parts
from channels.feishu.uploads import plan, send_all, upload_all, with_notes

ON_IT = "OnIt"
OUTCOME_EMOJI: dict[ReplyOutcome, str] = {"answered": "DONE", "failed": "CrossMark"}
GONE_CODES = frozenset({230011, 230110, 231003})
"""The message is recalled, deleted or unknown: deleting it again is done."""


async def deliver(*, client: FeishuClient, streams: CardStreams, reply: Reply) -> list[str]:
    """The reply's parts on Feishu, in order, then one message per file: their message ids.

    The files are uploaded first (see :mod:`channels.feishu.uploads`), so the text can say
    which of them Feishu would not take, and the files follow it closely."""
    cards = [LiveCard.decode(live_id) for live_id in reply.live_ids]
    ids: list[str] = []
    try:
        uploads, notes = plan(reply.files)
        ready, refused = await upload_all(client, reply, uploads)
        reply = with_notes(reply, notes + refused)
        parts = reply_parts(reply.text, reply.mentions)
        for index, part in enumerate(parts):
            card = cards[index] if index < len(cards) else None
            posted = card or await _post(client, streams, reply, index, part)
            if isinstance(posted, LiveCard):
                await streams.finish(posted, part)
                posted = posted.message_id
            ids.append(posted)
        for extra in reply.live_ids[len(parts) :]:
            await _delete(client, extra.partition("|")[0])
        ids.extend(await send_all(client, reply, ready))
    except FeishuError as error:
        # Done parts (or a lost answer) are safe to repeat: uuids, and edits to a final text.
        raise delivery_error(error, done_any=bool(ids)) from error
    return ids


async def _post(
    client: FeishuClient, streams: CardStreams, reply: Reply, index: int, part: str
) -> str | LiveCard:
    """Reply ``part`` as a post: its message id, or the live card its uuid had sent."""
    target = reply.reply_target
    if not target.get("message_id"):  # an agent posting first: a new message in the chat
        message = await client.send(
            chat_id=target["chat_id"],
            msg_type="post",
            content=post_content(part),
            uuid=f"{reply.delivery_key}-{index}",
        )
        return str(message["message_id"])
    message = await client.reply(
        message_id=target["message_id"],
        msg_type="post",
        content=post_content(part),
        in_thread=bool(target.get("in_thread")),
        uuid=f"{reply.delivery_key}-{index}",
    )
    message_id = str(message["message_id"])
    if message.get("msg_type") == "interactive":
        card_id = card_reference(message) or await streams.card_of(message_id)
        if card_id is not None:
            return CardStreams.found(message_id, card_id, message)
    return message_id


async def _delete(client: FeishuClient, message_id: str) -> None:
    try:
        await client.delete_message(message_id)
    except FeishuError as error:
        if error.code not in GONE_CODES:
            raise


async def mark_on_it(*, client: FeishuClient, message_id: str, agent: str) -> None:
    try:
        await client.add_reaction(message_id, ON_IT)
    except FeishuError as error:
        log_failure("feishu.reaction_failed", error, agent=agent, emoji=ON_IT)


async def mark_outcome(
    *, client: FeishuClient, message_id: str, outcome: ReplyOutcome, app_id: str, agent: str
) -> None:
    """``OnIt`` (this app's) replaced by the outcome's emoji; nothing is added twice."""
    emoji = OUTCOME_EMOJI[outcome]
    try:
        ours = [item for item in await client.reactions(message_id) if _by_app(item, app_id)]
        for item in ours:
            if _emoji(item) == ON_IT and item.get("reaction_id"):
                await client.delete_reaction(message_id, str(item["reaction_id"]))
        if not any(_emoji(item) == emoji for item in ours):
            await client.add_reaction(message_id, emoji)
    except FeishuError as error:
        log_failure("feishu.reaction_failed", error, agent=agent, emoji=emoji)


def _by_app(item: dict[str, Any], app_id: str) -> bool:
    operator = item.get("operator")
    if not isinstance(operator, dict) or operator.get("operator_type") != "app":
        return False
    return operator.get("operator_id") in (app_id, None)


def _emoji(item: dict[str, Any]) -> str | None:
    kind = item.get("reaction_type")
    return kind.get("emoji_type") if isinstance(kind, dict) else None
