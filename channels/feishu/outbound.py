"""Reply text as Feishu messages: ``@slug`` mentions of peer agents rendered as native
``<at user_id="ou_…">name</at>`` tags, then split into parts, each a Markdown post (the
``md`` tag) or the Markdown element of a streaming card (pure: no I/O).

The ``content`` JSON itself is built by :class:`FeishuClient` with ``json.dumps``, which
escapes the quotes of a tag like any other character, so the text here is plain text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.a2a.mentions import render_mentions
from channels.text_split import split_text

PART_LIMIT = 8000
"""Characters per reply part: far below Feishu's ~150 KB text limit, and still readable."""
SAFE_OPEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What an id must look like to go into the tag's attribute: ``ou_`` ids are letters, digits
and ``_``; anything else (a quote, ``>``) would break the tag, so that ``@slug`` stays text."""
_JOINED_TAG = "<at\x00user_id="
_TAG = "<at user_id="


def render_at_mentions(text: str, mentions: Mapping[str, str]) -> str:
    """``text`` with each ``@slug`` of ``mentions`` (slug -> open_id) as an ``<at>`` tag.

    The name in the tag is the slug: the reply knows no other name for the peer, and Feishu
    shows the mentioned bot's own name when it resolves the id. Ids that cannot go into the
    attribute safely are not rendered."""
    return _render(text, mentions, _TAG)


def reply_parts(
    text: str, mentions: Mapping[str, str] | None = None, *, limit: int = PART_LIMIT
) -> list[str]:
    """The text messages of one reply: mentions rendered first, so the limit counts the tags,
    then split so that no part ends inside a tag (short of a run of more than ``limit``
    characters without a space or line break, which can only be cut inside a word).

    Why the detour: :func:`split_text` may break a long paragraph after any space, and the tag
    has one (``<at user_id=``). It is rendered with a NUL there instead (same length, so the
    limit still holds; stored replies hold no NUL) and the space is put back in each part.
    """
    parts = split_text(_render(text, mentions or {}, _JOINED_TAG), limit=limit)
    return [part.replace(_JOINED_TAG, _TAG) for part in parts]


def _render(text: str, mentions: Mapping[str, str], opening: str) -> str:
    usable = {slug: oid for slug, oid in mentions.items() if SAFE_OPEN_ID.fullmatch(oid)}
    return render_mentions(text, usable, lambda slug, open_id: f'{opening}"{open_id}">{slug}</at>')


ELEMENT_ID = "reply"
"""The ``element_id`` of the card's one Markdown element (Feishu allows 20 characters)."""
SUMMARY_CHARS = 60
_AT_TAG = re.compile(r'<at user_id="([A-Za-z0-9_-]{1,128})">[^<]*</at>')


def post_content(part: str) -> dict[str, Any]:
    """A post whose one paragraph is a ``md`` tag: Feishu renders its Markdown (links, lists,
    bold, code blocks) and its ``<at user_id>`` mentions; HTML is not rendered."""
    return {"zh_cn": {"content": [[{"tag": "md", "text": part}]]}}


def card_markdown(part: str) -> str:
    """A part as the card's Markdown element shows it: the same Markdown, with each
    ``<at user_id="ou_…">name</at>`` in the card's own mention syntax ``<at id=ou_…></at>``."""
    return _AT_TAG.sub(lambda match: f"<at id={match.group(1)}></at>", part)


def summary(part: str) -> str:
    """The chat list's preview of a card: the start of its first line."""
    first = part.strip().split("\n", 1)[0]
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1] + "…"


def streaming_card(part: str) -> dict[str, Any]:
    """A card JSON 2.0 in streaming mode whose Markdown element shows ``part`` so far."""
    return {
        "schema": "2.0",
        "config": {
            "streaming_mode": True,
            "update_multi": True,
            "summary": {"content": summary(part)},
        },
        "body": {
            "elements": [
                {"tag": "markdown", "element_id": ELEMENT_ID, "content": card_markdown(part)}
            ]
        },
    }
