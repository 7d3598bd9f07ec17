"""Whether a request may start now: per-key rate and concurrency, and the server's capacity.

Every refusal is a 429 with `Retry-After`, sent before any tokenizer or engine work:

- requests per minute per key: a sliding window of request times (`admit_rate`, run by the auth
  dependency on every model route);
- requests in flight per key, and requests pending in the whole server (`max_num_seqs` running
  plus `max_queue` waiting): read from the engine's table of pending requests, which forgets a
  request the moment it finishes, so a client that vanishes cannot leak a slot (`admit_work`).

Requests without a key (an open server) share one bucket.

Wrong keys are throttled per client address (`FailedAuthThrottle`): after a burst of 401s within
a minute the address gets 429 until the oldest failure leaves the window, so keys cannot be
guessed at line rate.
"""

from __future__ import annotations

import math
import time
from collections import deque

from streamchat.api.errors import APIError
from streamchat.engine.async_engine import AsyncEngine

_WINDOW_S = 60.0


class MinuteWindows:
    """Event times per key over the last minute; keys whose window emptied are forgotten, at most
    once a minute, so memory follows the keys that are active."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: dict[str | None, deque[float]] = {}
        self._last_sweep = 0.0

    def retry_after(self, key: str | None, now: float) -> int | None:
        """Seconds until `key` is under its limit again; None when it is under it now."""
        recent = self._times.get(key)
        if recent is None:
            return None
        _drop_older(recent, now)
        if len(recent) < self.limit:
            return None
        return max(1, math.ceil(_WINDOW_S - (now - recent[0])))

    def record(self, key: str | None, now: float) -> None:
        if now - self._last_sweep >= _WINDOW_S:
            self._last_sweep = now
            for k in list(self._times):
                _drop_older(self._times[k], now)
                if not self._times[k]:
                    del self._times[k]
        self._times.setdefault(key, deque()).append(now)

    def __len__(self) -> int:
        """Keys held in memory."""
        return len(self._times)


class Admission:
    def __init__(self, rpm: int | None, max_per_key: int | None, max_running: int, max_queue: int) -> None:
        self.rpm = rpm
        self.max_per_key = max_per_key
        self.max_running, self.max_queue = max_running, max_queue
        self.rate_windows = MinuteWindows(rpm) if rpm is not None else None

    def admit_rate(self, owner: str | None, now: float | None = None) -> None:
        """Count a request against its key's requests per minute; 429 past the limit."""
        if self.rate_windows is None:
            return
        now = time.monotonic() if now is None else now
        retry = self.rate_windows.retry_after(owner, now)
        if retry is not None:
            raise APIError(
                429,
                f"rate limit reached: {self.rpm} requests per minute for this key; retry in {retry} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        self.rate_windows.record(owner, now)

    def admit_work(self, engine: AsyncEngine, owner: str | None) -> None:
        """Refuse at once when the caller's requests in flight or the server's queue are full."""
        if self.max_per_key is not None and engine.num_pending_for(owner) >= self.max_per_key:
            raise APIError(
                429,
                f"too many requests in flight for this key (limit {self.max_per_key}); retry when one finishes",
                code="concurrency_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        if engine.num_pending >= self.max_running + self.max_queue:
            raise APIError(
                429,
                f"the server is at capacity ({self.max_running} running and {self.max_queue} waiting); retry later",
                code="queue_full",
                headers={"Retry-After": "1"},
            )


class FailedAuthThrottle:
    def __init__(self, burst: int) -> None:
        self.failures = MinuteWindows(burst)

    def check(self, address: str, now: float | None = None) -> None:
        """429 while `address` has failed `burst` times within the last minute."""
        retry = self.failures.retry_after(address, time.monotonic() if now is None else now)
        if retry is not None:
            raise APIError(
                429,
                f"too many failed authentications from this address; retry in {retry} s",
                code="too_many_auth_failures",
                headers={"Retry-After": str(retry)},
            )

    def failed(self, address: str, now: float | None = None) -> None:
        self.failures.record(address, time.monotonic() if now is None else now)


def _drop_older(recent: deque[float], now: float) -> None:
    while recent and now - recent[0] >= _WINDOW_S:
        recent.popleft()
