"""Headless Chromium (Debian's `chromium`, driven by Playwright) against the real server.

The browser tests skip, saying why, where `/usr/bin/chromium` or Playwright is missing; `make test`
installs chromium on a Debian machine. One browser serves a whole test module; each test gets a
fresh context, so storage and connections never leak from one test to the next.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import running_server
from tests.support import PING_INTERVAL_S
from tests.web.proxy import CuttableProxy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESUME_GRACE_S = 30  # the production default; see `web_url`

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - the `test` extra installs it
    async_playwright = None


def _skip_reason() -> str | None:
    if async_playwright is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install Debian's chromium (make test does) to run the browser tests"
    return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 900, "height": 760})
    ctx.set_default_timeout(10_000)  # no browser step may hang a test
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page whose uncaught script errors fail the test."""
    pg = await context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(web_url: str) -> AsyncIterator[CuttableProxy]:
    p = CuttableProxy(web_url)
    await p.start()
    yield p
    await p.close()


@pytest.fixture(scope="session")
def web_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The browser tests' own server, for the tests that compare an answer with the greedy one.

    Resume grace is the production 30 s: the session server reaps a dropped stream after 2 s, but
    Chromium's `EventSource` waits 3 s before it reconnects (the server sends no `retry:`), so a
    test would race the reaper instead of testing resumption.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    flags = [
        "--ping-interval", str(PING_INTERVAL_S),
        "--resume-grace", str(RESUME_GRACE_S),
        "--log-level", "warning",
    ]  # fmt: skip
    with running_server(tmp_path_factory.mktemp("web-server"), *flags) as server:
        yield server.url
