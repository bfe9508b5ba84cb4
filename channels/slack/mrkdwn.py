"""Standard Markdown -> Slack mrkdwn, for a message's plain ``text`` (the notification
fallback). Pure: no I/O.

What changes (outside code): ``**bold**``/``__bold__`` -> ``*bold*``, ``*em*``/``_em_`` ->
``_em_``, ``***both***`` -> ``*_both_*``, ``~~strike~~`` -> ``~strike~``, ``[label](url)`` and
``<url>`` -> ``<url|label>``/``<url>`` for http, https and mailto URLs only (any other link
keeps its label, as text), ``![alt](url)`` -> ``<url|alt>``, ``# Heading`` -> ``*Heading*``,
``- item``/``* item``/``+ item`` -> ``• item`` (indent kept), ``> quote`` -> ``> quote`` (one
level: Slack has no nesting), a rule (``---``) -> a line of ``─``, a backslash escape -> the
character. Anything else (tables, numbered lists, unclosed markers) stays as written.

Code is kept verbatim: nothing is converted inside a fenced block (``````` or ``~~~``, its
info string dropped since Slack would show it as code; an unclosed block is closed at the end)
or an inline code span (shown between single backticks).

Escaping: every ``&``, ``<`` and ``>`` of the text, in code too, becomes ``&amp;``, ``&lt;``,
``&gt;`` (Slack shows them as the characters), so only the links made here are Slack markup: a
``<script>`` in a reply is shown as text, and no ``<!channel>``, ``<!here>`` or ``<@U…>`` can
be written by a reply. That includes mentions the bridge rendered itself: render native
mentions after converting, or hold them out of the text and put them back (as
``channels.slack.outbound.fallback_text`` does, with a placeholder of letters and digits, which
passes through unchanged).
"""

from __future__ import annotations

import re

__all__ = ["to_mrkdwn"]

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^(?P<indent>[ \t]*)[-*+][ \t]+(?P<text>.*)$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}>+[ \t]?(?P<text>.*)$")
_SAFE_URL = re.compile(r"(?:https?|mailto):", re.IGNORECASE)

_INLINE = re.compile(
    r"""
      (?P<code>(?P<ticks>`+)(?P<code_text>.+?)(?<!`)(?P=ticks)(?!`))
    | \\(?P<escaped>[!-/:-@\[-`{-~])
    | (?P<link>!?\[(?P<label>(?:[^\[\]\\]|\\.)*)\]
        \(\s*(?P<url><[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)
        (?:\s+(?:"[^"]*"|'[^']*'|\([^()]*\)))?\s*\))
    | <(?P<auto>(?:https?|mailto):[^<>\s]+)>
    | \*\*\*(?=[^\s*])(?P<both>.+?)(?<=[^\s*])\*\*\*(?!\*)
    | \*\*(?=\S)(?P<strong>.+?)(?<=\S)\*\*
    | (?<!\w)__(?=\S)(?P<strong_u>.+?)(?<=\S)__(?!\w)
    | ~~(?=\S)(?P<strike>.+?)(?<=\S)~~
    | \*(?=[^\s*])(?P<em>.+?)(?<=[^\s*])\*(?!\*)
    | (?<!\w)_(?=[^\s_])(?P<em_u>.+?)(?<=[^\s_])_(?!\w)
    """,
    re.VERBOSE,
)


def to_mrkdwn(markdown: str) -> str:
    """``markdown`` as Slack mrkdwn (see the module docstring for exactly what changes)."""
    out: list[str] = []
    fence = ""  # the open code block's fence, else ""
    for line in markdown.split("\n"):
        if fence:
            close = _FENCE_CLOSE.match(line)
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence):
                out.append("```")
                fence = ""
            else:
                out.append(_escape(line))
            continue
        opening = _FENCE_OPEN.match(line)
        if opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            fence = opening["fence"]
            out.append(opening["indent"] + "```")
            continue
        out.append(_block_line(line))
    if fence:
        out.append("```")
    return "\n".join(out)


def _block_line(line: str) -> str:
    if _RULE.match(line):
        return "─" * 10
    if heading := _HEADING.match(line):
        text = _inline(heading["text"] or "", bold=True)
        return f"*{text}*" if text.strip() else ""
    if bullet := _BULLET.match(line):
        return f"{bullet['indent']}• {_inline(bullet['text'])}"
    if quote := _QUOTE.match(line):
        return f"> {_block_line(quote['text'])}".rstrip()
    return _inline(line)


def _inline(text: str, *, bold: bool = False) -> str:
    """Inline Markdown as mrkdwn; ``bold``: inside bold already (a heading), so inner bold
    markers are dropped rather than nested."""
    out: list[str] = []
    pos = 0
    while (match := _INLINE.search(text, pos)) is not None:
        out.append(_escape(text[pos : match.start()]))
        out.append(_convert(match, bold=bold))
        pos = match.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _convert(match: re.Match[str], *, bold: bool) -> str:
    group = match.lastgroup
    if match["code"] is not None:
        return f"`{_escape(match['code_text'])}`"
    if match["escaped"] is not None:
        return _escape(match["escaped"])
    if match["link"] is not None:
        label = _inline(match["label"], bold=bold)
        url = match["url"].removeprefix("<").removesuffix(">")
        return _link(url, label) if _SAFE_URL.match(url) else label
    if match["auto"] is not None:
        return _link(match["auto"], "")
    if match["both"] is not None:
        inner = f"_{_inline(match['both'], bold=True)}_"
        return inner if bold else f"*{inner}*"
    if match["strong"] is not None or match["strong_u"] is not None:
        inner = _inline(match["strong"] or match["strong_u"], bold=True)
        return inner if bold else f"*{inner}*"
    if match["strike"] is not None:
        return f"~{_inline(match['strike'], bold=bold)}~"
    if match["em"] is not None or match["em_u"] is not None:
        return f"_{_inline(match['em'] or match['em_u'], bold=bold)}_"
    raise AssertionError(f"unhandled inline match {group!r}")  # pragma: no cover


def _link(url: str, label: str) -> str:
    # "|" and ">" would end the URL early: percent-encode them (both are URL-safe that way).
    target = _escape(url.replace("|", "%7C").replace(">", "%3E"))
    return f"<{target}|{label}>" if label.strip() else f"<{target}>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
