"""The chat page end to end: real headless Chromium against a real bridge in this process.

The API has its own tests; these check that the page drives it correctly (sign-in, new chat,
sending with Enter, live replies over the WebSocket, history after a reload, phone layout).
The default agent echoes, so every message gets its own text back as the reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from bridge.api.live import LIVE, TOO_SLOW
from bridge.api.tokens import create_token
from bridge.settings import Settings
from bridge.store.models import MessageState
from tests.support.api import ApiClient
from tests.support.browser import chromium
from tests.support.harness import RunningBridge, make_settings, running_bridge

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Locator,
        Page,
        ViewportSize,
        expect,
    )
except ImportError as error:  # a clear failure, not a skip: a broken page must not go unnoticed
    raise ImportError(
        "the chat page tests need the 'playwright' package (pip install playwright; "
        "never 'playwright install': the tests use Debian's chromium)"
    ) from error

# The page is the same whatever the database; one dialect keeps these slow tests few.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

WAIT_MS = 10_000
DESKTOP: ViewportSize = {"width": 1200, "height": 760}
PHONE: ViewportSize = {"width": 375, "height": 740}

expect.set_options(timeout=WAIT_MS)


# Injected by the browser driver, so the page's own policy does not stop it.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""


def watch_csp(page: Page) -> list[str]:
    """Every Content-Security-Policy violation the page reports from now on."""
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "CSP violation" in message.text or "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", on_console)
    return violations


@asynccontextmanager
async def page_on(
    bridge: RunningBridge,
    browser: Browser,
    viewport: ViewportSize,
    *,
    allow_csp_violations: bool = False,
) -> AsyncIterator[Page]:
    """A fresh browser context (own localStorage) showing the bridge's chat page, served
    with its Content-Security-Policy, which nothing the page does may violate."""
    context = await browser.new_context(viewport=viewport)
    try:
        await context.add_init_script(REPORT_CSP_VIOLATIONS)
        page = await context.new_page()
        violations = watch_csp(page)
        page.set_default_timeout(WAIT_MS)
        response = await page.goto(f"{bridge.url}/")
        assert response is not None
        assert "script-src 'self'" in response.headers.get("content-security-policy", "")
        yield page
        assert allow_csp_violations or violations == []
    finally:
        await context.close()


async def signed_in(page: Page) -> None:
    """Wait until the page is past sign-in and its live connection is up."""
    await expect(page.locator("#session-list")).to_be_attached()
    await expect(page.locator("#connection-status")).to_have_text("live")


async def new_chat(page: Page, title: str = "") -> str:
    """Start a chat with the default agent; returns its session id."""
    await page.click("#new-chat")
    await expect(page.locator("#agent-select")).to_have_value("assistant")
    await page.fill("#new-chat-title", title)
    await page.click("#new-chat-create")
    await expect(page.locator("#composer")).to_be_visible()
    match = re.fullmatch(r"#/sessions/(\d+)", await page.evaluate("location.hash"))
    assert match is not None
    return match.group(1)


async def say(page: Page, *lines: str) -> None:
    """Type ``lines`` (Shift+Enter between them), press Enter, wait for the echoed reply."""
    composer = page.locator("#composer")
    for index, line in enumerate(lines):
        if index:
            await composer.press("Shift+Enter")
        await composer.type(line)
    await composer.press("Enter")
    text = "\n".join(lines)
    await expect(composer).to_have_value("")
    await expect(user_message(page, text)).to_have_count(1)
    await expect(reply(page, text)).to_have_count(1)


def user_message(page: Page, text: str) -> Locator:
    return page.locator("#messages [data-message-id][data-role=user] .content").filter(
        has_text=re.compile(f"^{re.escape(text)}$")
    )


def reply(page: Page, text: str) -> Locator:
    return page.locator("#messages [data-message-id][data-role=assistant] .content").filter(
        has_text=re.compile(f"^{re.escape(text)}$")
    )


async def test_chat_and_history_after_reload(database_url: str) -> None:
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,
    ):
        await signed_in(page)  # dev login, nothing asked
        session_id = await new_chat(page, "Trying the bridge")
        await say(page, "Hello bridge!")
        await say(page, "Two lines:", "the second one.")
        screenshot = os.environ.get("BRIDGE_SCREENSHOT")
        if screenshot:
            await expect(page.locator("#messages .status, #typing")).to_have_count(0)  # all settled
            await page.screenshot(path=screenshot)

        # Text is text: markup in a message must not become elements.
        await say(page, "<b>not bold</b>")
        assert await page.locator("#messages .content b").count() == 0

        await page.goto(f"{bridge.url}/")  # a reload, without the chat in the URL
        await signed_in(page)
        item = page.locator(f'[data-session-id="{session_id}"]')
        await expect(item).to_contain_text("Trying the bridge")
        await item.click()
        for text in ("Hello bridge!", "Two lines:\nthe second one.", "<b>not bold</b>"):
            await expect(user_message(page, text)).to_have_count(1)
            await expect(reply(page, text)).to_have_count(1)
        messages = page.locator("#messages [data-message-id]")
        await expect(messages).to_have_count(6)
        roles = [await item.get_attribute("data-role") for item in await messages.all()]
        assert roles == ["user", "assistant"] * 3  # oldest first


async def test_the_policy_stops_injected_inline_script(database_url: str) -> None:
    """Were some text ever to become markup, its script would not run (and the violation
    watch that every other test relies on does see it)."""
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP, allow_csp_violations=True) as page,
    ):
        await signed_in(page)
        async with page.expect_console_message(
            lambda message: "CSP violation: script-src" in message.text, timeout=WAIT_MS
        ):
            await page.evaluate(
                """() => {
                  const script = document.createElement("script");
                  script.textContent = "window.injected = true";
                  document.body.append(script);
                }"""
            )
        assert await page.evaluate("window.injected === undefined")


async def test_a_tab_carries_on_with_the_sign_in_of_another_tab(database_url: str) -> None:
    """A local sign-in replaces the previous local token. Two tabs that both signed in (they
    opened at once) share their storage: the tab whose token was replaced takes the other
    tab's token instead of asking for one (or signing in again and replacing that one)."""
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as first,
    ):
        await signed_in(first)
        await first.evaluate("localStorage.clear()")  # as if the second tab had opened first
        second = await first.context.new_page()
        async with first.expect_event("websocket", timeout=WAIT_MS):  # its next live socket
            await second.goto(f"{bridge.url}/")
            await signed_in(second)
        await signed_in(first)
        await expect(first.locator("#signin")).to_be_hidden()
        await new_chat(first, "Still signed in")
        await say(first, "after the other tab signed in")
        await new_chat(second, "Signed in here too")
        await say(second, "both work")


async def test_phone_shows_one_pane_at_a_time(database_url: str) -> None:
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, PHONE) as page,
    ):
        await signed_in(page)
        await expect(page.locator("#sidebar")).to_be_visible()
        await expect(page.locator("#conversation")).to_be_hidden()
        session_id = await new_chat(page)
        await say(page, "hi from a phone")

        await page.click("#back")
        item = page.locator(f'[data-session-id="{session_id}"]')
        await expect(item).to_be_visible()
        await expect(page.locator("#conversation")).to_be_hidden()

        await item.click()
        await expect(page.locator("#sidebar")).to_be_hidden()
        await expect(page.locator("#back")).to_be_visible()
        await expect(reply(page, "hi from a phone")).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing sticks out sideways


def without_dev_login(settings: Settings) -> Settings:
    return settings.model_copy(update={"web": settings.web.model_copy(update={"dev_login": False})})


async def test_token_sign_in_without_dev_login(database_url: str) -> None:
    settings = without_dev_login(make_settings(database_url))
    async with running_bridge(settings) as bridge, chromium() as browser:
        token = await create_token(bridge.sessions, name="alice", admin=False)
        async with page_on(bridge, browser, DESKTOP) as page:
            await expect(page.locator("#signin-form")).to_be_visible()
            await expect(page.locator("#signin")).to_contain_text("bridge token create")

            await page.fill("#token-input", "brg_wrong")
            await page.click("#signin-submit")
            await expect(page.locator("#signin-error")).to_be_visible()

            await page.fill("#token-input", token)
            await page.click("#signin-submit")
            await signed_in(page)
            await expect(page.locator("#user-name")).to_have_text("alice")
            await new_chat(page)
            await say(page, "hello, it is alice")

            await page.reload()  # the token is remembered
            await signed_in(page)
            await expect(reply(page, "hello, it is alice")).to_have_count(1)

            await page.click("#sign-out")
            await expect(page.locator("#signin-form")).to_be_visible()


async def test_an_agent_to_agent_session_names_both_agents(database_url: str) -> None:
    agents = [
        {"slug": "alpha", "name": "Alpha", "peers": ["beta"]},
        {"slug": "beta", "name": "Beta"},
    ]
    async with (
        running_bridge(make_settings(database_url, agents=agents)) as bridge,
        chromium() as browser,
    ):
        asked = await bridge.pipeline.asks.send(
            sender="alpha",
            target="beta",
            text="status of the release?",
            conversation=None,
            key="page-test",
        )
        await bridge.reply_to(asked.message_id, state="delivered")
        async with page_on(bridge, browser, DESKTOP) as page:
            await signed_in(page)  # the local admin sees every session
            item = page.locator(f'[data-session-id="{asked.session_id}"]')
            await expect(item).to_contain_text("alpha → beta")
            await expect(item).to_contain_text("agent")
            await item.click()
            await expect(page.locator("#conversation-meta")).to_contain_text("alpha → beta")
            ask = page.locator("#messages [data-role=user][data-sender-kind=agent]")
            await expect(ask.locator(".sender")).to_have_text("Alpha")
            await expect(ask.locator(".agent-badge")).to_have_text("agent")
            answer = page.locator("#messages [data-role=assistant]")
            await expect(answer.locator(".sender")).to_have_text("Beta")
            await expect(answer.locator(".content")).to_have_text("status of the release?")
            await expect(page.locator("#read-only-note")).to_be_visible()


async def test_a_page_too_far_behind_reloads_once_and_carries_on(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropped as too slow (4408) while more happened than a resume may replay, the page is
    answered ``reset``: it reloads the conversation from the API and resumes from the reset's
    point afterwards, instead of asking for the same replay again."""
    caplog.set_level(logging.INFO, logger="bridge.api.live")

    def logged(event: str) -> int:
        return sum(record.getMessage() == event for record in caplog.records)

    settings = make_settings(database_url)
    web = settings.web.model_copy(update={"live_max_catch_up_events": 5})
    async with (
        running_bridge(settings.model_copy(update={"web": web})) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,
        aiohttp.ClientSession() as http,
    ):
        await signed_in(page)
        session_id = int(await new_chat(page))
        await say(page, "before the drop")
        status = page.locator("#connection-status")
        hub = bridge.app[LIVE]

        def drop_all() -> None:
            for client in hub.clients:
                hub.drop(client, TOO_SLOW, "too slow; reconnect and resume")

        # Away (and kept away: offline), while more happens than a resume may replay.
        await page.context.set_offline(True)
        drop_all()
        await expect(status).to_have_text("reconnecting…")
        token = await page.evaluate("localStorage.getItem('bridge.token')")
        same_user = ApiClient(http=http, base_url=bridge.url, token=token)
        for index in range(3):
            sent = await same_user.say(session_id, f"while away {index}")
            await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        await page.context.set_offline(False)
        for index in range(3):
            await expect(reply(page, f"while away {index}")).to_have_count(1, timeout=30_000)
        await expect(status).to_have_text("live")
        assert logged("live.reset") == 1

        # Dropped again with nothing missed: it resumes from the reset's point (a page still
        # at its old point would be reset, and reload, every time).
        resumed = logged("live.resumed")
        drop_all()
        async with asyncio.timeout(40):
            while logged("live.resumed") == resumed:  # noqa: ASYNC110 (log records)
                await asyncio.sleep(0.1)
        assert logged("live.reset") == 1
        await expect(status).to_have_text("live")
        await say(page, "after the reset")
        connections = logged("live.connected")
        await asyncio.sleep(3)
        assert logged("live.connected") == connections, "no reconnect loop"
