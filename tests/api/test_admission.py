"""`api/admission.py` alone: the per-key window, in-flight and capacity limits, with a stand-in engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streamchat.api.admission import Admission, FailedAuthThrottle
from streamchat.api.errors import APIError


@dataclass
class PendingTable:
    """What admission reads from the engine: requests pending, in all and per owner."""

    owners: list[str | None] = field(default_factory=list)

    @property
    def num_pending(self) -> int:
        return len(self.owners)

    def num_pending_for(self, owner: str | None) -> int:
        return self.owners.count(owner)


def test_the_sliding_window() -> None:
    admission = Admission(rpm=2, max_per_key=None, max_running=4, max_queue=0)
    admission.admit_rate("k", now=0.0)
    admission.admit_rate("k", now=1.0)
    with pytest.raises(APIError) as refused:
        admission.admit_rate("k", now=2.0)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "58"
    admission.admit_rate("other", now=2.0)  # each key has its own window
    admission.admit_rate("k", now=60.5)  # the first request has left the window


def test_keys_that_went_quiet_are_forgotten() -> None:
    """Regression: a key's window was kept forever, so memory grew with every key ever seen."""
    admission = Admission(rpm=5, max_per_key=None, max_running=4, max_queue=0)
    for i in range(100):
        admission.admit_rate(f"key-{i}", now=float(i) / 10)
    assert len(admission.rate_windows) == 100
    admission.admit_rate("late", now=200.0)
    assert len(admission.rate_windows) == 1


def test_no_rate_limit_tracks_nothing() -> None:
    admission = Admission(rpm=None, max_per_key=None, max_running=4, max_queue=0)
    for _ in range(1000):
        admission.admit_rate("k")
    assert admission.rate_windows is None


def test_in_flight_per_key_then_server_capacity() -> None:
    admission = Admission(rpm=None, max_per_key=2, max_running=2, max_queue=1)
    engine = PendingTable(["a", "a"])
    with pytest.raises(APIError) as per_key:
        admission.admit_work(engine, "a")  # type: ignore[arg-type]
    assert per_key.value.code == "concurrency_limit_exceeded"
    admission.admit_work(engine, "b")  # type: ignore[arg-type]
    engine.owners.append("b")
    with pytest.raises(APIError) as full:
        admission.admit_work(engine, "c")  # type: ignore[arg-type]
    assert full.value.status == 429 and full.value.code == "queue_full" and full.value.headers["Retry-After"] == "1"


def test_failed_authentication_is_throttled_per_address() -> None:
    throttle = FailedAuthThrottle(burst=3)
    for t in (0.0, 1.0, 2.0):
        throttle.check("10.0.0.1", now=t)
        throttle.failed("10.0.0.1", now=t)
    with pytest.raises(APIError) as refused:
        throttle.check("10.0.0.1", now=3.0)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "57"
    throttle.check("10.0.0.2", now=3.0)  # another address is not held back
    throttle.check("10.0.0.1", now=60.5)  # the first failure has left the window
