"""A network cut mid-answer, in a real browser: nothing is lost or doubled once it comes back.

The page is loaded through a proxy that can cut every connection and refuse new ones for a
moment (tests/web/proxy.py). Both the chat page (fetch, its own resume loop) and the browser's
own `EventSource` (which reconnects by itself with `Last-Event-ID`) must end with exactly the
uninterrupted greedy answer.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Page, Request

from tests.support import parse_sse
from tests.web.chat import (
    ANSWER,
    ANSWER_TIMEOUT_S,
    FINAL_STATES,
    ask,
    greedy_answer,
    open_chat,
    raw_answer,
    wait_for_state,
    wait_for_text,
)
from tests.web.proxy import CuttableProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "Write a short list of three fruits, in markdown."
MAX_TOKENS = 48
CUT_S = 1.5  # how long the network stays down


async def test_the_page_resumes_after_a_cut_and_shows_it(page: Page, proxy: CuttableProxy, web_url: str):
    expected = await greedy_answer(web_url, QUESTION, MAX_TOKENS)
    resumes: list[Request] = []
    page.on("request", lambda r: resumes.append(r) if r.method == "GET" and "/v1/streams/" in r.url else None)
    await open_chat(page, proxy.url, max_tokens=str(MAX_TOKENS))
    await ask(page, QUESTION)
    await wait_for_text(page)
    assert await page.locator(ANSWER).last.get_attribute("data-state") == "streaming"

    await proxy.cut()
    assert await wait_for_state(page, ("reconnecting",), timeout_s=5) == "reconnecting"
    assert await page.locator(f"{ANSWER} .status").last.text_content() == "reconnecting…"
    await asyncio.sleep(CUT_S)
    await proxy.restore()

    assert await wait_for_state(page, FINAL_STATES) == "done"
    assert await raw_answer(page) == expected
    assert "resumed" in (await page.locator(f"{ANSWER} .meta").last.text_content() or "")
    assert resumes, "the page never asked to resume"
    last_event_id = (await resumes[-1].all_headers()).get("last-event-id", "")
    assert resumes[-1].url.rpartition("/")[2] == last_event_id.partition(":")[0], last_event_id


EVENT_SOURCE = """url => {
  window.es = { text: "", ids: [], opens: 0, errors: 0, done: false };
  const source = new EventSource(url);
  source.onopen = () => { es.opens++; };
  source.onerror = () => { es.errors++; };
  source.onmessage = (e) => {
    es.ids.push(e.lastEventId);
    if (e.data === "[DONE]") { es.done = true; source.close(); return; }
    es.text += JSON.parse(e.data).text;
  };
}"""


async def test_event_source_reconnects_by_itself_and_loses_nothing(page: Page, proxy: CuttableProxy, web_url: str):
    path = f"/stream?prompt={quote('Name three colours.')}&temperature=0&max_length=76"
    async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S) as http:
        whole = parse_sse((await http.get(f"{web_url}{path}")).text).events
    expected = "".join(json.loads(e.data)["text"] for e in whole if e.data != "[DONE]")
    reconnects: list[Request] = []
    page.on("request", lambda r: reconnects.append(r) if r.url.endswith(path) else None)

    await page.goto(f"{proxy.url}/health")  # any page of the proxy's origin: EventSource stays same-origin
    await page.evaluate(EVENT_SOURCE, path)
    await page.wait_for_function("() => es.text.length > 0", timeout=ANSWER_TIMEOUT_S * 1000)
    assert not await page.evaluate("es.done")

    await proxy.cut()
    await page.wait_for_function("() => es.errors > 0", timeout=5000)
    await asyncio.sleep(CUT_S)
    await proxy.restore()
    await page.wait_for_function("() => es.done", timeout=ANSWER_TIMEOUT_S * 1000)

    es = await page.evaluate("es")
    assert es["text"] == expected
    assert es["opens"] >= 2, es
    seqs = [int(i.rpartition(":")[2]) for i in es["ids"]]
    assert seqs == list(range(len(whole))), f"events lost or doubled: {seqs}"
    sent = [(await r.all_headers()).get("last-event-id") for r in reconnects]
    assert sent[0] is None and all(sent[1:]) and len(sent) >= 2, sent
