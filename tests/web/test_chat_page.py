"""The chat page at `/` in headless Chromium against the real server: streaming, stop, history, safety."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, Request, Route

from tests.web.chat import (
    ANSWER,
    FINAL_STATES,
    answer_text,
    ask,
    greedy_answer,
    open_chat,
    raw_answer,
    rendered,
    wait_for_state,
    wait_for_text,
    watch_answer,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "Write a short list of three fruits, in markdown."
MAX_TOKENS = 48


async def test_an_answer_streams_in_and_equals_the_greedy_answer(page: Page, context: BrowserContext, web_url: str):
    expected = await greedy_answer(web_url, QUESTION, MAX_TOKENS)
    await open_chat(page, web_url, max_tokens=str(MAX_TOKENS))
    await ask(page, QUESTION)
    shown = await watch_answer(page)

    assert await page.locator(ANSWER).last.get_attribute("data-state") == "done"
    assert len([t for t in shown if t]) >= 3, f"the answer did not stream in: {shown}"
    assert await raw_answer(page) == expected
    assert shown[-1] == await rendered(page, expected)
    meta = await page.locator(f"{ANSWER} .meta").last.text_content()
    assert re.fullmatch(r"first token \d+\.\d\d s · \d+ tokens · \d+\.\d tokens/s", meta or ""), meta

    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web_url)
    await page.locator(f"{ANSWER} .copy").last.click()
    assert await page.evaluate("navigator.clipboard.readText()") == expected


async def test_history_settings_and_regenerate_go_into_the_requests(page: Page, base_url: str):
    bodies: list[dict] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            bodies.append(request.post_data_json)

    page.on("request", record)
    await open_chat(page, base_url, max_tokens="6", system="Answer in one short sentence.")
    await ask(page, "What is the sea?")
    assert await wait_for_state(page, FINAL_STATES) == "done"
    first = await raw_answer(page)
    await ask(page, "And the sky?")
    assert await wait_for_state(page, FINAL_STATES) == "done"
    await page.click("#regenerate")
    assert await wait_for_state(page, FINAL_STATES) == "done"

    assert len(bodies) == 3
    assert bodies[0] == {
        "messages": [
            {"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the sea?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": 6,
    }
    second = bodies[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == first
    assert bodies[2] == bodies[1], "regenerate must ask the same question again, without the old answer"
    assert await page.locator(ANSWER).count() == 2


async def test_stop_ends_generation_on_the_server(page: Page, base_url: str):
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
        await _wait_idle(http)
        before = (await http.get("/health")).json()
        # a long budget: only Stop may end this answer early (it ends in well under a second)
        await open_chat(page, base_url, max_tokens="400")
        await ask(page, "Tell me a long story about a dragon.")
        await wait_for_text(page)
        assert (await http.get("/health")).json()["running"] >= 1
        await page.click("#stop")
        assert await wait_for_state(page, FINAL_STATES, timeout_s=5) == "stopped"

        after = await _wait_idle(http, timeout_s=3.0)
        assert after["streams"]["cancelled"] == before["streams"]["cancelled"] + 1
        assert after["aborted"] >= before["aborted"] + 1
    assert len(deletes) == 1 and "/v1/streams/" in deletes[0]
    text = await answer_text(page)
    await asyncio.sleep(0.5)
    assert await answer_text(page) == text, "the answer kept growing after Stop"
    assert not await page.locator("#send").is_disabled()


async def _wait_idle(http: httpx.AsyncClient, timeout_s: float = 30.0) -> dict:
    """The server's health once nothing is generating."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = (await http.get("/health")).json()
        if health["running"] == 0 and health["waiting"] == 0:
            return health
        assert time.monotonic() < deadline, f"still generating {timeout_s:.0f} s later: {health}"
        await asyncio.sleep(0.05)


async def test_a_401_asks_for_a_key_and_the_key_is_sent(page: Page, base_url: str):
    """The server has no auth yet: the route fakes its 401 for requests without the key."""
    seen: list[str | None] = []

    async def guard(route: Route) -> None:
        auth = route.request.headers.get("authorization")
        seen.append(auth)
        if auth == "Bearer sk-test":
            await route.continue_()
            return
        error = {"message": "Missing API key", "type": "invalid_request_error", "param": None, "code": None}
        await route.fulfill(status=401, json={"error": error})

    await page.route("**/v1/chat/completions", guard)
    await open_chat(page, base_url, max_tokens="4")
    await ask(page, "Hello?")
    assert await wait_for_state(page, FINAL_STATES) == "error"
    assert "API key" in (await page.text_content("#notice") or "")
    assert await page.evaluate("document.activeElement.id") == "api-key"

    await page.fill("#api-key", "sk-test")
    await page.click("#regenerate")
    assert await wait_for_state(page, FINAL_STATES) == "done"
    assert seen == [None, "Bearer sk-test"]
    assert await page.locator(ANSWER).count() == 1


HOSTILE = """<script>window.pwned=1</script><img src=x onerror="window.pwned=2">

**bold** and *italic* with `<b>code</b>`, [bad](javascript:window.pwned=3) and [good](https://example.com/a).

- <iframe src="javascript:window.pwned=4"></iframe>
- second

```html
<script>window.pwned=5</script>
```
"""


async def test_model_output_never_becomes_html(page: Page, base_url: str):
    await page.goto(f"{base_url}/")
    await page.evaluate("src => new streamchat.MessageView('assistant', src)", HOSTILE)
    await page.wait_for_timeout(300)  # room for an onerror handler to fire, were there one

    assert await page.evaluate("typeof window.pwned") == "undefined"
    content = page.locator(f"{ANSWER} .content").last
    assert await content.locator("script, img, iframe, object, embed, svg, style, link").count() == 0
    text = await content.text_content() or ""
    assert '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">' in text  # shown, not run
    assert await content.locator("pre > code").text_content() == "<script>window.pwned=5</script>"
    assert await content.locator("strong").text_content() == "bold"
    assert await content.locator("em").text_content() == "italic"
    assert await content.locator("p > code").text_content() == "<b>code</b>"
    assert await content.locator("li").count() == 2
    links = await content.locator("a").evaluate_all("as => as.map(a => [a.textContent, a.href, a.rel, a.target])")
    assert links == [["good", "https://example.com/a", "noopener noreferrer nofollow", "_blank"]]


async def test_enter_during_ime_composition_does_not_send(page: Page, base_url: str):
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    await page.goto(f"{base_url}/")
    await page.fill("#input", "你好")
    for composing in ({"isComposing": True}, {"keyCode": 229}):
        not_cancelled = await page.eval_on_selector(
            "#input",
            "(el, init) => el.dispatchEvent(new KeyboardEvent('keydown',"
            " {key: 'Enter', code: 'Enter', bubbles: true, cancelable: true, ...init}))",
            composing,
        )
        assert not_cancelled, f"Enter with {composing} was taken as send"
    await page.press("#input", "Shift+Enter")
    await page.wait_for_timeout(300)

    assert posts == []
    assert await page.locator(".msg").count() == 0
    assert await page.input_value("#input") == "你好\n"
