"""The model is loaded on a thread that ends with the load (see `in_passing_thread`)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamchat.api.threads import in_passing_thread


def test_the_work_runs_on_a_thread_that_has_ended_when_its_result_arrives() -> None:
    async def main() -> tuple[int, threading.Thread]:
        return await in_passing_thread(lambda a, b: (a + b, threading.current_thread()), 2, 3)

    value, worker = asyncio.run(main())
    assert value == 5
    assert worker is not threading.main_thread()
    worker.join(5)
    assert not worker.is_alive(), "a lingering thread would keep its OpenMP team next to the engine's"


def test_an_exception_reaches_the_awaiting_task() -> None:
    def fail() -> None:
        raise RuntimeError("no such model")

    with pytest.raises(RuntimeError, match="no such model"):
        asyncio.run(in_passing_thread(fail))
