"""to_mrkdwn: an agent's Markdown as Slack mrkdwn for a message's plain ``text``."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.slack.mrkdwn import to_mrkdwn


def test_a_typical_reply() -> None:
    reply = "\n".join(
        [
            "# Deploy notes",
            "",
            "The **release** is *out*, see [the docs](https://example.com/a?b=1&c=2).",
            "",
            "- first step",
            "* second step",
            "",
            "```python",
            'print("**not bold** & <b>")',
            "```",
            "",
            "<script>alert(1)</script> ~~old~~",
        ]
    )
    assert to_mrkdwn(reply) == "\n".join(
        [
            "*Deploy notes*",
            "",
            "The *release* is _out_, see <https://example.com/a?b=1&amp;c=2|the docs>.",
            "",
            "• first step",
            "• second step",
            "",
            "```",
            'print("**not bold** &amp; &lt;b&gt;")',
            "```",
            "",
            "&lt;script&gt;alert(1)&lt;/script&gt; ~old~",
        ]
    )


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*em* and _em_", "_em_ and _em_"),
        ("***both***", "*_both_*"),
        ("**bold with _em_ inside**", "*bold with _em_ inside*"),
        ("*em with **bold** inside*", "_em with *bold* inside_"),
        ("~~gone~~", "~gone~"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("**unclosed bold", "**unclosed bold"),
        ("an *unclosed em", "an *unclosed em"),
        ("`**not bold**` and `a < b`", "`**not bold**` and `a &lt; b`"),
        ("\\*literal\\* stars", "*literal* stars"),
        ("[mail](mailto:a@example.com)", "<mailto:a@example.com|mail>"),
        ("[x](javascript:alert(1))", "x"),
        ("[rel](/relative/path)", "rel"),
        ("[**bold** label](http://x.test)", "<http://x.test|*bold* label>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[pipe](https://x.test/a|b>c)", "<https://x.test/a%7Cb%3Ec|pipe>"),
        ("![a cat](https://x.test/cat.png)", "<https://x.test/cat.png|a cat>"),
        ("## Title with **bold** ##", "*Title with bold*"),
        ("#hashtag is not a heading", "#hashtag is not a heading"),
        ("  - nested item", "  • nested item"),
        ("> quoted **text**", "> quoted *text*"),
        ("---", "─" * 10),
        ("1. numbered stays", "1. numbered stays"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "| a | b |\n|---|---|\n| 1 | 2 |"),
        ("```\nunclosed **code**", "```\nunclosed **code**\n```"),
        ("~~~js\nx && y\n~~~", "```\nx &amp;&amp; y\n```"),
        ("````\n```\nstill code\n````", "```\n```\nstill code\n```"),
        ("", ""),
    ],
)
def test_conversions(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    "attempt",
    [
        "<!channel> everyone look",
        "<!here|here>",
        "<@U12345> ping",
        "[<!channel>](https://x.test)",
        "[label](https://x.test/<!channel>)",
        "`<!everyone>`",
        "```\n<!channel>\n```",
        "<script>window.pwned=1</script>",
    ],
)
def test_no_slack_markup_can_be_injected(attempt: str) -> None:
    converted = to_mrkdwn(attempt)
    assert "<!" not in converted
    assert "<@" not in converted
    assert "<script" not in converted


def test_a_placeholder_of_letters_and_digits_passes_through() -> None:
    """How a caller keeps its own native mentions: hold them out, put them back after."""
    held = "slackmention0a1b2cn0x"
    converted = to_mrkdwn(f"**hi** {held}, see `{held}`")
    assert converted == f"*hi* {held}, see `{held}`"
    assert converted.replace(held, "<@U123>") == "*hi* <@U123>, see `<@U123>`"


SLACK_MARKUP = re.compile(r"<([^<>]*)>")


PIECES = st.sampled_from(
    [*"ab *_~`[]()<>!@&|#-:/\\\n", "https://x.test", "mailto:a@b", "javascript:", "<!channel>"]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=60).map("".join))
def test_any_text_gives_only_safe_links_as_markup(text: str) -> None:
    """Whatever the input, every ``<...>`` left is a link made here: to an http(s) or mailto
    URL, never a mention or a special like ``<!channel>``."""
    converted = to_mrkdwn(text)
    for markup in SLACK_MARKUP.findall(converted):
        assert re.match(r"(?:https?|mailto):", markup, re.IGNORECASE), markup
