"""``@slug`` mentions of agents in an agent's text: found by the core, rendered by channels.

An agent addresses another by writing ``@slug``. The core decides which of those are peers it
may hand off to; each channel turns them into its platform's native mention (``<@U…>`` on
Slack, ``<@123>`` on Discord, ``<at user_id="ou_…">`` on Feishu) with :func:`render_mentions`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

MENTION = re.compile(r"(?<![\w@/.])@([a-z0-9][a-z0-9_-]{0,62})(?![\w-])")
"""``@slug`` as a word of its own: not inside an e-mail address, a URL path or a longer name."""


def mentioned_slugs(text: str, candidates: Collection[str]) -> list[str]:
    """The candidates mentioned in ``text``, in order of first mention, each once."""
    found: list[str] = []
    for match in MENTION.finditer(text):
        slug = match.group(1)
        if slug in candidates and slug not in found:
            found.append(slug)
    return found


def render_mentions(
    text: str, mentions: Mapping[str, str], render: Callable[[str, str], str]
) -> str:
    """``text`` with each ``@slug`` in ``mentions`` replaced by ``render(slug, platform_id)``;
    other ``@words`` are left as they are."""
    if not mentions:
        return text

    def replace(match: re.Match[str]) -> str:
        slug = match.group(1)
        platform_id = mentions.get(slug)
        return match.group(0) if platform_id is None else render(slug, platform_id)

    return MENTION.sub(replace, text)


def strip_mention(text: str, slug: str) -> str:
    """``text`` without ``@slug``, as a channel removes its bot's own mention from a message."""
    cleaned = MENTION.sub(lambda m: "" if m.group(1) == slug else m.group(0), text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()
