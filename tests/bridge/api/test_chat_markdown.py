"""The chat page shows agents' Markdown formatted, and inert, in a real headless Chromium.

The default agent echoes, so a Markdown message typed by the user comes back as a reply: the
user's own bubble shows the text exactly as typed, the reply shows it formatted (marked, then
DOMPurify; vendored under bridge/api/static/vendor/). Attempted script and event handlers in
the reply must stay text.

One test streams end to end (the echo agent in chunks, the server's ``message.delta``
frames); the page-only one feeds the page's own live socket (routed through Playwright to the
real server) with frames it writes itself, to pin down the "thinking…" state and late deltas.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.bridge.api.test_chat_page import DESKTOP, new_chat, page_on, signed_in
from tests.support.browser import chromium
from tests.support.harness import make_settings, running_bridge

try:
    from playwright.async_api import Page, WebSocketRoute, expect
except ImportError as error:  # a clear failure, not a skip (as in test_chat_page.py)
    raise ImportError("the chat page tests need the 'playwright' package") from error

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SCRIPT = "<script>window.pwned=1</script>"
IMG = '<img src=x onerror="window.pwned=1">'
REPLY = f"""# Release notes

Read **the docs** at [the site](https://example.com/docs) and not [this](javascript:window.pwned=1).

- first item
- second item

| name | value |
|------|-------|
| a    | 1     |

```python
print("**not bold** <b>")
```

{SCRIPT}

Inline {IMG} too."""

# Every element under the messages with an attribute named on...: none may have one.
HANDLER_ATTRIBUTES = """() => [...document.querySelectorAll("#messages *")].flatMap((node) =>
  [...node.attributes].filter((a) => a.name.toLowerCase().startsWith("on")).map((a) => a.name))"""


async def send_text(page: Page, text: str) -> None:
    """Put ``text`` (several lines) in the composer and press Enter."""
    await page.fill("#composer", text)
    await page.locator("#composer").press("Enter")
    await expect(page.locator("#composer")).to_have_value("")


async def test_a_markdown_reply_is_formatted_and_inert(database_url: str) -> None:
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,  # also: no CSP violation at all
    ):
        await signed_in(page)
        await new_chat(page, "Markdown")
        await send_text(page, REPLY)
        answer = page.locator("#messages [data-message-id][data-role=assistant] .content")
        await expect(answer).to_have_count(1)
        await expect(page.locator("#typing")).to_have_count(0)

        # Formatted: heading, bold, a list, a safe link, code kept verbatim, a table.
        await expect(answer.locator("h1")).to_have_text("Release notes")
        await expect(answer.locator("p > strong")).to_have_text("the docs")
        await expect(answer.locator("ul > li")).to_have_text(["first item", "second item"])
        link = answer.locator("a")
        await expect(link).to_have_count(1)  # the javascript: one is its label only
        await expect(link).to_have_text("the site")
        await expect(link).to_have_attribute("href", "https://example.com/docs")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        await expect(link).to_have_attribute("target", "_blank")
        await expect(answer).to_contain_text("not this.")
        code = answer.locator("pre > code")
        await expect(code).to_have_text('print("**not bold** <b>")\n')
        assert await code.locator("*:not(span)").count() == 0
        await expect(answer.locator("table th")).to_have_text(["name", "value"])
        await expect(answer.locator("table tbody td")).to_have_text(["a", "1"])

        # Inert: the tags are text, nothing ran, no element carries a handler.
        await expect(answer).to_contain_text(SCRIPT)
        await expect(answer).to_contain_text(IMG)
        assert await answer.locator("script, img, b").count() == 0
        assert await page.evaluate("window.pwned") is None
        assert await page.evaluate(HANDLER_ATTRIBUTES) == []

        # The user's own message is plain text: exactly what was typed, no elements.
        mine = page.locator("#messages [data-message-id][data-role=user] .content")
        assert await mine.evaluate("node => node.textContent") == REPLY
        assert await mine.locator("*").count() == 0

        await page.reload()  # history renders the same way
        await signed_in(page)
        await expect(answer.locator("ul > li")).to_have_count(2)
        await expect(answer.locator("p > strong")).to_have_text("the docs")
        assert await page.evaluate("window.pwned") is None
        assert await page.evaluate(HANDLER_ATTRIBUTES) == []


def message(session_id: int, id_: int, role: str, content: str, **fields: Any) -> dict[str, Any]:
    """A message as the API's JSON has it (bridge/api/models.py MessageOut)."""
    return {
        "id": id_,
        "session_id": session_id,
        "role": role,
        "content": content,
        "sender": None,
        "state": "pending",
        "delivery": None,
        "error": None,
        "attempts": 0,
        "reply_to": None,
        "chain_origin": id_,
        "chain_hops": 0,
        "created_at": datetime.now(UTC).isoformat(),
        "edited_at": None,
        "deleted_at": None,
        **fields,
    }


async def test_page_only_delta_frames_grow_a_draft_until_the_reply(database_url: str) -> None:
    """Page-only: the frames are written here and pushed down the page's own socket."""
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,
    ):
        await signed_in(page)
        sockets: list[WebSocketRoute] = []

        def through(route: WebSocketRoute) -> None:
            route.connect_to_server()  # everything else passes both ways unchanged
            sockets.append(route)

        await page.route_web_socket(re.compile(r"/api/v1/ws"), through)
        await page.reload()  # the next socket goes through the route
        await signed_in(page)
        session_id = int(await new_chat(page, "Streaming"))
        assert sockets

        def push(frame: dict[str, Any]) -> None:
            sockets[-1].send(json.dumps(frame))

        def delta(session: int, reply_to: int, text: str) -> dict[str, Any]:
            return {
                "type": "message.delta",
                "session_id": session,
                "reply_to": reply_to,
                "text": text,
            }

        question = message(session_id, 900_001, "user", "Tell me")
        push({"type": "message.created", "message": question})
        typing = page.locator("#typing")
        await expect(typing).to_have_text(re.compile("thinking…"))

        draft = page.locator('#messages [data-draft-for="900001"]')
        push(delta(session_id + 1000, 900_002, "**another chat**"))  # not shown here: ignored
        push(delta(session_id, 900_001, "Partial **bold**"))
        await expect(draft.locator(".content strong")).to_have_text("bold")
        await expect(typing).to_have_count(0)  # writing has started
        push(delta(session_id, 900_001, "Partial **bold** and\n\n- a list"))
        await expect(draft.locator(".content li")).to_have_text("a list")
        await expect(draft).to_have_count(1)
        assert await page.locator("[data-draft-for='900002']").count() == 0
        assert await draft.get_attribute("data-message-id") is None  # not a stored reply

        final = "Done: **bold** and\n\n- a list\n- and more"
        stored = message(
            session_id, 900_003, "assistant", final, reply_to=900_001, delivery="delivered"
        )
        push({"type": "message.created", "message": stored})
        await expect(draft).to_have_count(0)
        reply = page.locator('#messages [data-message-id="900003"] .content')
        await expect(reply.locator("li")).to_have_text(["a list", "and more"])
        await expect(typing).to_have_count(0)  # answered, though the question is still pending

        push(delta(session_id, 900_001, "late"))  # after the reply: no new draft
        push({"type": "message.updated", "message": {**question, "state": "answered"}})
        await expect(page.locator('#messages [data-message-id="900001"]')).to_have_attribute(
            "data-state", "answered"
        )
        await expect(draft).to_have_count(0)


# Records, from now on, every text the draft bubble shows.
WATCH_DRAFTS = """() => {
  window.drafts = [];
  new MutationObserver(() => {
    const draft = document.querySelector("#messages .draft .content");
    const text = draft ? draft.textContent.trim() : "";
    if (text && window.drafts[window.drafts.length - 1] !== text) window.drafts.push(text);
  }).observe(document.querySelector("#messages"),
             { childList: true, subtree: true, characterData: true });
}"""


async def test_a_streamed_reply_grows_on_the_page_before_it_is_complete(
    database_url: str,
) -> None:
    """End to end: the echo agent streams in chunks, the server sends delta frames, the page
    shows the reply growing, then the stored reply in its place."""
    agent = {"slug": "assistant", "echo_stream_chunk_chars": 12, "echo_stream_delay_ms": 80}
    text = " ".join(f"word{n}" for n in range(40))
    async with (
        running_bridge(make_settings(database_url, agents=[agent])) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,
    ):
        await signed_in(page)
        await new_chat(page, "Streaming")
        await page.evaluate(WATCH_DRAFTS)
        await send_text(page, text)
        answer = page.locator("#messages [data-message-id][data-role=assistant] .content")
        await expect(answer).to_have_text(text)
        await expect(page.locator("#messages .draft")).to_have_count(0)
        drafts: list[str] = await page.evaluate("window.drafts")
        assert len(drafts) >= 2, drafts
        assert drafts[0] != text and len(drafts[0]) < len(text)
        assert all(text.startswith(draft) for draft in drafts), drafts
        assert [len(d) for d in drafts] == sorted(len(d) for d in drafts)
