"""`api/response_store_redis.py` against a real redis-server: two stores on one Redis stand for two
processes, each with its own connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from streamchat.api.response_store import StoredResponse
from streamchat.api.response_store_redis import INDEX_KEY, RedisResponseStore, cancel_key, response_key
from streamchat.streams.log import StreamStoreUnavailableError
from tests.redis_server import free_port

CANCEL_NOTICED_S = 0.5


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[redis.Redis, redis.Redis]]:
    a, b = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    await a.flushdb()
    yield a, b
    await a.aclose()
    await b.aclose()


@pytest.fixture
async def stores(clients: tuple[redis.Redis, redis.Redis]) -> AsyncIterator[tuple[RedisResponseStore, ...]]:
    pair = tuple(RedisResponseStore(client, size=100, ttl=60) for client in clients)
    yield pair
    for store in pair:
        await store.close()


def response(response_id: str, owner: str | None = "k1", status: str = "completed") -> StoredResponse:
    body = {"id": response_id, "object": "response", "status": status, "output": [], "note": "中文 😀"}
    return StoredResponse(response_id, owner, body, [{"role": "user", "content": "hi"}], stream_id="s1")


async def test_a_response_put_by_one_process_is_read_by_another_and_only_by_its_owner(stores) -> None:
    a, b = stores
    await a.put(response("resp_1"))
    got = await b.get("resp_1", "k1")
    assert got is not None and got.body == response("resp_1").body
    assert got.conversation == [{"role": "user", "content": "hi"}] and got.stream_id == "s1" and got.owner == "k1"
    assert await b.get("resp_1", "k2") is None and await b.get("resp_1", None) is None
    assert await b.get("resp_nope", "k1") is None
    await a.put(response("resp_open", owner=None))
    assert await b.get("resp_open", None) is not None and await b.get("resp_open", "k1") is None


async def test_delete_is_owner_scoped_and_seen_everywhere(stores, clients) -> None:
    a, b = stores
    await a.put(response("resp_1"))
    assert await b.delete("resp_1", "k2") is None and await a.get("resp_1", "k1") is not None
    assert (await b.delete("resp_1", "k1")).id == "resp_1"
    assert await a.get("resp_1", "k1") is None and await b.delete("resp_1", "k1") is None
    assert await clients[0].zscore(INDEX_KEY, "resp_1") is None


async def test_the_store_keeps_the_newest_by_count(clients) -> None:
    store = RedisResponseStore(clients[0], size=3, ttl=60)
    for i in range(5):
        await store.put(response(f"resp_{i}"))
    assert [await store.get(f"resp_{i}", "k1") is not None for i in range(5)] == [False, False, True, True, True]
    assert await clients[0].exists(response_key("resp_0"), response_key("resp_1")) == 0, "evicted keys are deleted"
    assert await clients[0].zcard(INDEX_KEY) == 3


async def test_the_store_forgets_responses_by_age(clients) -> None:
    store = RedisResponseStore(clients[0], size=100, ttl=0.3)
    await store.put(response("resp_old"))
    assert await store.get("resp_old", "k1") is not None
    await asyncio.sleep(0.5)
    assert await store.get("resp_old", "k1") is None
    await store.put(response("resp_new"))
    assert await clients[0].zrange(INDEX_KEY, 0, -1) == [b"resp_new"], "the index drops what has expired"


async def test_save_writes_the_live_object_through_and_never_brings_back_a_deleted_one(stores) -> None:
    a, b = stores
    live = response("resp_1", status="in_progress")
    await a.put(live)
    live.body["status"] = "completed"
    live.conversation.append({"role": "assistant", "content": "hello"})
    await a.save(live)
    seen = await b.get("resp_1", "k1")
    assert seen.body["status"] == "completed" and seen.conversation[-1]["content"] == "hello"
    await b.delete("resp_1", "k1")
    await a.save(live)
    assert await b.get("resp_1", "k1") is None


async def test_the_running_process_reads_its_live_object_while_redis_says_it_is_stored(stores) -> None:
    a, b = stores
    live = response("resp_1", status="in_progress")
    await a.put(live)
    with a.running(live, lambda: None):
        live.body["output"].append({"type": "message"})
        assert await a.get("resp_1", "k1") is live
        assert (await b.get("resp_1", "k1")).body["output"] == [], "others see what was written"
        assert await a.get("resp_1", "k2") is None
        await b.delete("resp_1", "k1")
        assert await a.get("resp_1", "k1") is None


async def test_a_cancel_sent_to_another_process_stops_the_run_where_it_runs(stores, clients) -> None:
    a, b = stores
    live = response("resp_1", status="in_progress")
    await a.put(live)
    stopped = asyncio.Event()
    with a.running(live, stopped.set):
        remote = await b.get("resp_1", "k1")
        sent = time.monotonic()
        await b.cancel(remote)
        await asyncio.wait_for(stopped.wait(), CANCEL_NOTICED_S)
        assert time.monotonic() - sent < CANCEL_NOTICED_S
        await asyncio.sleep(0.3)
        assert await clients[0].exists(cancel_key("resp_1")) == 0, "a request is taken once"


async def test_a_cancel_on_the_running_process_stops_it_at_once(stores) -> None:
    a, _ = stores
    live = response("resp_1", status="in_progress")
    await a.put(live)
    calls: list[str] = []
    with a.running(live, lambda: calls.append("abort")):
        await a.cancel(live)
        assert calls == ["abort"]


async def test_a_cancel_sent_before_the_run_starts_stops_it_as_it_starts(stores) -> None:
    a, b = stores
    live = response("resp_1", status="queued")
    await a.put(live)
    await b.cancel(await b.get("resp_1", "k1"))
    stopped = asyncio.Event()
    with a.running(live, stopped.set):
        await asyncio.wait_for(stopped.wait(), CANCEL_NOTICED_S)


async def test_an_unreachable_redis_is_a_store_error_not_a_hang(tmp_path: Path) -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=2, socket_connect_timeout=2)
    store = RedisResponseStore(client, size=10, ttl=60)
    item = response("resp_1")
    started = time.monotonic()
    for call in (store.put(item), store.get("resp_1", "k1"), store.delete("resp_1", "k1"), store.save(item),
                 store.cancel(item)):  # fmt: skip
        with pytest.raises(StreamStoreUnavailableError):
            await call
    assert time.monotonic() - started < 5
    await client.aclose()
