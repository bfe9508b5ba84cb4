"""The chat page's "Session details" in a real headless Chromium: an admin (the local sign-in
is one) sees the session's long memory, as text."""

from __future__ import annotations

import re

import pytest

from tests.bridge.memory.conversation import remembering_agent
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.browser import chromium
from tests.support.harness import make_settings, running_bridge

try:
    from playwright.async_api import Page, expect
except ImportError as error:  # a clear failure, not a skip: a broken page must not go unnoticed
    raise ImportError("the chat page tests need the 'playwright' package") from error

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
WAIT_MS = 10_000


async def send(page: Page, text: str, replies: int) -> None:
    composer = page.locator("#composer")
    await composer.fill(text)
    await composer.press("Enter")
    answers = page.locator("#messages [data-message-id][data-role=assistant]")
    await expect(answers).to_have_count(replies, timeout=WAIT_MS)


async def test_an_admin_sees_the_summary_in_the_session_details(
    database_url: str, model: FakeOpenAIServer
) -> None:
    settings = make_settings(database_url, agents=[remembering_agent(model)])
    async with running_bridge(settings) as bridge, chromium() as browser:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{bridge.url}/")
            await expect(page.locator("#connection-status")).to_have_text("live")
            await page.click("#new-chat")
            await page.click("#new-chat-create")
            await expect(page.locator("#composer")).to_be_visible()
            details = page.locator("#session-details")
            await expect(details).to_be_visible()
            await details.locator("summary").click()
            summary = page.locator("#session-summary")
            await expect(summary).to_have_text("No summary yet.")

            await send(page, "<b>first</b>", 1)
            for number, text in enumerate(("second", "third", "fourth"), start=2):
                await send(page, text, number)
            # The fold before the fourth answer took the first exchange; the open details
            # show it once the reply arrives, as text: the markup stays characters.
            await expect(summary).to_contain_text("<b>first</b>", timeout=WAIT_MS)
            assert await summary.locator("b").count() == 0
            await expect(page.locator("#session-summary-meta")).to_have_text(
                re.compile(r"^Up to message #\d+, updated ")
            )
            facts = page.locator("#session-facts")
            await expect(facts).to_contain_text("web")
        finally:
            await context.close()
