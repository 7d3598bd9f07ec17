"""`/metrics` against the real server: every metric moves when what it measures happens.

Each test scrapes before and after an action and checks the difference, so a metric whose
instrumentation is removed (or never fires) fails here, and other tests sharing the server cannot
make these pass by accident.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import LONG_ANSWER, RESUME_GRACE_S, wait_for

Samples = dict[tuple[str, frozenset], float]

SHORT = {
    "messages": [{"role": "user", "content": "Count to ten."}],
    "max_tokens": 8,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}
LONG = {**SHORT, "max_tokens": LONG_ANSWER, "resumable": False}  # cannot finish within the grace period
CHAT = "/v1/chat/completions"


def scrape(http: httpx.Client) -> Samples:
    resp = http.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def stream_events(http: httpx.Client, body: dict) -> list[dict]:
    with http.stream("POST", CHAT, json=body) as resp:
        assert resp.status_code == 200, resp.read()
        payloads = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def test_metrics_are_prometheus_text(http: httpx.Client) -> None:
    resp = http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"streamchat_time_to_first_token_seconds", "streamchat_num_requests_running"} <= names


def test_a_stream_feeds_the_latency_histograms_and_token_counters(http: httpx.Client) -> None:
    before = scrape(http)
    events = stream_events(http, SHORT)
    after = scrape(http)
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] == 8

    assert grew(before, after, "streamchat_time_to_first_token_seconds_count") == 1
    assert grew(before, after, "streamchat_inter_token_latency_seconds_count") == 7  # 8 tokens, 7 gaps
    assert grew(before, after, "streamchat_inter_token_latency_seconds_sum") > 0
    assert grew(before, after, "streamchat_e2e_request_latency_seconds_count") == 1
    assert grew(before, after, "streamchat_queue_time_seconds_count") == 1
    # on the wire: the first chunk, then a gap before each later one (role chunk, 8 tokens, usage, [DONE])
    assert grew(before, after, "streamchat_wire_first_byte_seconds_count") == 1
    assert grew(before, after, "streamchat_wire_chunk_gap_seconds_count") >= len(events)
    assert grew(before, after, "streamchat_prompt_tokens_total") == usage["prompt_tokens"]
    assert grew(before, after, "streamchat_generation_tokens_total") == 8
    assert grew(before, after, "streamchat_requests_finished_total") == 1
    assert grew(before, after, "streamchat_streams_started_total") == 1
    assert grew(before, after, "streamchat_http_requests_total", method="POST", route=CHAT, status="200") == 1


def test_requests_are_counted_by_route_and_status(http: httpx.Client) -> None:
    before = scrape(http)
    assert http.post(CHAT, json={**SHORT, "temperature": 5}).status_code == 400
    assert http.get("/no/such/route").status_code == 404
    assert http.get("/v1/streams/nosuchstream").status_code == 404
    after = scrape(http)
    assert grew(before, after, "streamchat_http_requests_total", method="POST", route=CHAT, status="400") == 1
    assert grew(before, after, "streamchat_http_requests_total", method="GET", route="unmatched", status="404") == 1
    # a route template, never the id: labels must not grow with every stream
    streams = "/v1/streams/{stream_id}"
    assert grew(before, after, "streamchat_http_requests_total", method="GET", route=streams, status="404") == 1
    assert grew(before, after, "streamchat_http_requests_total", method="GET", route="/metrics", status="200") == 1
    assert not any("nosuchstream" in str(labels) for _, labels in after)


def test_non_streamed_answers_feed_the_engine_side_histograms_only(http: httpx.Client) -> None:
    before = scrape(http)
    resp = http.post(CHAT, json={**SHORT, "stream": False})
    assert resp.status_code == 200, resp.text
    after = scrape(http)
    assert grew(before, after, "streamchat_time_to_first_token_seconds_count") == 1
    assert grew(before, after, "streamchat_e2e_request_latency_seconds_count") == 1
    assert grew(before, after, "streamchat_wire_first_byte_seconds_count") == 0  # JSON is not an event stream


async def _open(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    resp = await client.send(client.build_request("POST", CHAT, json=body), stream=True)
    assert resp.status_code == 200
    return resp


def test_gauges_show_running_and_waiting_and_leaving_clients_are_counted(base_url: str, http: httpx.Client) -> None:
    """The test server runs 16 sequences at once: a 17th request must wait."""
    before = scrape(http)

    async def crowd() -> Samples:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            responses = await asyncio.gather(*(_open(client, LONG) for _ in range(17)))
            try:
                assert wait_for(lambda: value(scrape(http), "streamchat_num_requests_running") == 16, timeout=30)
                return scrape(http)
            finally:
                for resp in responses:
                    await resp.aclose()

    during = asyncio.run(crowd())
    assert value(during, "streamchat_num_requests_running") == 16
    assert value(during, "streamchat_num_requests_waiting") == 1
    assert wait_for(lambda: grew(before, scrape(http), "streamchat_requests_aborted_total") == 17, timeout=30)
    after = scrape(http)
    assert value(after, "streamchat_num_requests_running") == 0
    assert value(after, "streamchat_num_requests_waiting") == 0
    assert grew(before, after, "streamchat_stream_disconnects_total") == 17


def test_resumes_cancels_and_abandoned_streams_are_counted(http: httpx.Client) -> None:
    before = scrape(http)
    # resume: read a short stream, then ask again for what came after its first event
    with http.stream("POST", CHAT, json=SHORT) as resp:
        ids = [line[4:] for line in resp.iter_lines() if line.startswith("id: ")]
    assert http.get(f"/v1/streams/{ids[0].split(':')[0]}", headers={"Last-Event-ID": ids[0]}).status_code == 200
    # cancel: DELETE a long stream while it runs
    long_resumable = {**LONG, "resumable": True}
    with http.stream("POST", CHAT, json=long_resumable) as resp:
        assert http.delete(f"/v1/streams/{resp.headers['x-stream-id']}").json()["cancelled"] is True
        resp.read()
    # abandon: drop a resumable stream and let its grace period pass
    with http.stream("POST", CHAT, json=long_resumable) as resp:
        next(resp.iter_lines())
    dropped = time.monotonic()
    assert wait_for(lambda: grew(before, scrape(http), "streamchat_streams_abandoned_total") == 1, RESUME_GRACE_S + 30)
    assert time.monotonic() - dropped >= RESUME_GRACE_S - 0.5
    # the engine thread takes the aborts between two steps: cancelled and abandoned
    assert wait_for(lambda: grew(before, scrape(http), "streamchat_requests_aborted_total") == 2, timeout=30)
    after = scrape(http)
    assert grew(before, after, "streamchat_stream_resumes_total") == 1
    assert grew(before, after, "streamchat_streams_cancelled_total") == 1
    assert grew(before, after, "streamchat_stream_disconnects_total") == 1  # the dropped one


def test_every_response_carries_a_request_id(http: httpx.Client) -> None:
    mine = http.get("/health", headers={"X-Request-Id": "trace-42.a"})
    assert mine.headers["x-request-id"] == "trace-42.a"
    fresh = http.get("/health")
    other = http.get("/health")
    assert len(fresh.headers["x-request-id"]) == 32
    assert fresh.headers["x-request-id"] != other.headers["x-request-id"]
    unsafe = http.get("/health", headers={"X-Request-Id": "a b\tc" + "x" * 200})
    assert unsafe.headers["x-request-id"] != "a b\tc" + "x" * 200
    refused = http.post(CHAT, json={}, headers={"X-Request-Id": "bad-body-1"})
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == "bad-body-1"
