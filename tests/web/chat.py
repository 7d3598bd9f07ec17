"""Driving the chat page from a test: settings, a question, the answer's states and text."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from playwright.async_api import Page

ANSWER = ".msg.assistant"
FINAL_STATES = ("done", "stopped", "error")
ANSWER_TIMEOUT_S = 120.0  # 48 tokens take seconds here, but the CPU is shared with other work


async def open_chat(page: Page, url: str, *, temperature: str = "0", max_tokens: str = "48", system: str = "") -> None:
    await page.goto(f"{url}/")
    await page.click("#settings summary")
    await page.fill("#temperature", temperature)
    await page.fill("#max-tokens", max_tokens)
    await page.fill("#system", system)


async def ask(page: Page, question: str) -> None:
    """Type the question and press Enter, as a person would."""
    await page.fill("#input", question)
    await page.press("#input", "Enter")


async def state(page: Page) -> str | None:
    """The last answer's state: streaming, reconnecting, done, stopped or error."""
    return await page.locator(ANSWER).last.get_attribute("data-state")


async def answer_text(page: Page) -> str:
    return await page.locator(f"{ANSWER} .content").last.text_content() or ""


async def wait_for_state(page: Page, states: tuple[str, ...], timeout_s: float = ANSWER_TIMEOUT_S) -> str:
    await page.wait_for_function(
        "states => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        " return m !== undefined && states.includes(m.dataset.state); }",
        arg=list(states),
        timeout=timeout_s * 1000,
        polling=50,
    )
    return await state(page) or ""


async def wait_for_text(page: Page, timeout_s: float = ANSWER_TIMEOUT_S) -> str:
    """The last answer's text once it has some."""
    await page.wait_for_function(
        "() => { const c = [...document.querySelectorAll('.msg.assistant .content')].pop();"
        " return c !== undefined && c.textContent.length > 0; }",
        timeout=timeout_s * 1000,
        polling=20,
    )
    return await answer_text(page)


async def watch_answer(page: Page, timeout_s: float = ANSWER_TIMEOUT_S) -> list[str]:
    """Every distinct text the last answer showed, polled until it reaches a final state."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await answer_text(page)
        if not seen or seen[-1] != text:
            seen.append(text)
        if await state(page) in FINAL_STATES:
            final = await answer_text(page)
            if seen[-1] != final:
                seen.append(final)
            return seen
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the answer did not finish in {timeout_s:.0f} s; it showed {seen[-1:]!r}")


async def raw_answer(page: Page) -> str:
    """The Markdown source of the last answer, as the page keeps it in the conversation."""
    return await page.evaluate("streamchat.conversation.at(-1).content")


async def rendered(page: Page, markdown: str) -> str:
    """The text the page's renderer shows for `markdown`."""
    return await page.evaluate(
        "src => { const d = document.createElement('div'); d.append(streamchat.renderMarkdown(src));"
        " return d.textContent; }",
        markdown,
    )


async def greedy_answer(url: str, question: str, max_tokens: int) -> str:
    """The uninterrupted temperature-0 answer, asked of the server directly."""
    body = {"messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": max_tokens}
    async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S) as client:
        resp = await client.post(f"{url}/v1/chat/completions", json=body)
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"]
