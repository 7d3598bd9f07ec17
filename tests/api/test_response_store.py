"""`api/response_store.py`: the memory store, bounded and owner-scoped, and how a cancel reaches a run."""

from __future__ import annotations

import asyncio

from streamchat.api.response_store import MemoryResponseStore, StoredResponse


def response(response_id: str, owner: str | None = "k1") -> StoredResponse:
    return StoredResponse(response_id, owner, {"id": response_id, "status": "in_progress"})


async def test_responses_are_owner_scoped_and_the_oldest_go_first() -> None:
    store = MemoryResponseStore(size=2, ttl=60)
    for i in range(3):
        await store.put(response(f"resp_{i}"))
    assert await store.get("resp_0", "k1") is None and await store.get("resp_2", "k1") is not None
    assert await store.get("resp_2", "k2") is None and await store.delete("resp_2", "k2") is None
    assert (await store.delete("resp_2", "k1")).id == "resp_2" and await store.get("resp_2", "k1") is None


async def test_responses_expire() -> None:
    store = MemoryResponseStore(size=10, ttl=0.05)
    await store.put(response("resp_0"))
    await asyncio.sleep(0.1)
    assert await store.get("resp_0", "k1") is None


async def test_a_cancel_reaches_the_run_now_or_as_it_starts() -> None:
    store = MemoryResponseStore(size=10, ttl=60)
    running, early = response("resp_0"), response("resp_1")
    calls: list[str] = []
    with store.running(running, lambda: calls.append("resp_0")):
        await store.cancel(running)
    await store.cancel(early)  # its run has not started yet
    with store.running(early, lambda: calls.append("resp_1")):
        pass
    with store.running(early, lambda: calls.append("again")):
        pass
    assert calls == ["resp_0", "resp_1"]
