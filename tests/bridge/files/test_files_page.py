"""Files on the chat page, in a real headless Chromium: attached with the attach button, an
image shown inline (fetched with the token), another file offered as a download by its name,
shown as text whatever it contains, all without a Content-Security-Policy violation."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.bridge.api.test_chat_page import DESKTOP, new_chat, page_on, signed_in
from tests.bridge.files.web_files import png, stored_objects, with_files
from tests.support.browser import chromium
from tests.support.harness import make_settings, running_bridge

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_an_attached_image_is_shown_inline_and_a_file_as_a_download(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    odd_name = "<img src=x onerror=alert(1)>.txt"
    async with (
        running_bridge(with_files(make_settings(database_url), store)) as bridge,
        chromium() as browser,
        page_on(bridge, browser, DESKTOP) as page,
    ):
        await signed_in(page)
        await new_chat(page, "Files")
        await page.set_input_files(
            "#file-input",
            files=[
                {"name": "cat.png", "mimeType": "image/png", "buffer": png(8, 6)},
                {"name": odd_name, "mimeType": "text/plain", "buffer": b"just text"},
            ],
        )
        await expect(page.locator("#chosen-files li")).to_have_count(2)
        await page.locator("#composer").fill("a picture")
        await page.locator("#composer").press("Enter")
        await expect(page.locator("#chosen-files")).to_be_hidden()

        sent = page.locator("#messages [data-role=user]").filter(has_text="a picture")
        image = sent.locator(".attachment.image img")
        await expect(image).to_have_attribute("alt", "cat.png")
        await expect(image).to_have_attribute("src", re.compile("^data:image/png"))
        assert await image.evaluate("img => img.complete && img.naturalWidth") == 8
        link = sent.locator(".attachment.file a.download")
        await expect(link).to_have_text(odd_name)
        assert await sent.locator(".attachments img").count() == 1  # the name made no element

        async with page.expect_download() as started:
            await link.click()
        downloaded = await started.value
        assert downloaded.suggested_filename.endswith(".txt")
        saved = Path(await downloaded.path())
        assert await asyncio.to_thread(saved.read_bytes) == b"just text"
        assert len(stored_objects(store)) == 2

        # After a reload the history shows them again.
        await page.reload()
        await signed_in(page)
        again = page.locator("#messages [data-role=user]").filter(has_text="a picture")
        await expect(again.locator(".attachment.image img")).to_have_attribute(
            "src", re.compile("^data:image/png")
        )
