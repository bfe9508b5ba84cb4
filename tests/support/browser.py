"""A real headless Chromium for end-to-end tests of the chat page.

Playwright's own browser download needs the internet, so we drive Debian's ``chromium``
package instead (apt-installed here when missing and we are root, like PostgreSQL in
``tests/support/postgres.py``). When no browser can be had, the tests that need one fail with
the reason: a silently skipped UI test would hide a broken page.

Typical use::

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.apt import AptFailed, install_lock, run_apt

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "BrowserUnavailable", "chromium", "ensure_chromium"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",  # we often run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    # The machine's network is closed: without these Chromium keeps trying to reach Google
    # services and fills logs with refused connections.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(RuntimeError):
    """No Chromium (or no Playwright) and no way to get it."""


def _usable() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def ensure_chromium() -> Path:
    """Path to Chromium, apt-installing Debian's ``chromium`` first if root and missing.

    ``apt-get update`` only runs when the plain install fails: it is slow, and the package
    lists are usually fresh enough. The file lock is PostgreSQL's, since dpkg has one global
    lock whichever package we install.
    """
    if _usable():
        return CHROMIUM
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise BrowserUnavailable(
            f"{CHROMIUM} not found and it cannot be installed automatically (needs root and "
            "apt-get); install Debian's 'chromium' package"
        )
    install = [apt_get, "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "chromium"]
    with install_lock():
        if not _usable():  # another worker may have installed it while we waited
            try:
                run_apt(install)
            except AptFailed:
                try:
                    run_apt([apt_get, "-q", "update"])
                    run_apt(install)
                except AptFailed as error:
                    raise BrowserUnavailable(f"could not install chromium: {error}") from None
    if not _usable():
        raise BrowserUnavailable(f"apt-get installed 'chromium' but {CHROMIUM} is still missing")
    return CHROMIUM


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium driven by Playwright; fails the test if there is none."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "the chat page tests need the 'playwright' package (pip install playwright; do not "
            "run 'playwright install', it downloads browsers)",
            pytrace=False,
        )
    try:
        executable = await asyncio.to_thread(ensure_chromium)
    except BrowserUnavailable as error:
        pytest.fail(f"NO CHROMIUM: {error}", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()
