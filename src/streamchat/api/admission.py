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


class Admission:
    def __init__(self, rpm: int | None, max_per_key: int | None, max_running: int, max_queue: int) -> None:
        self.rpm = rpm
        self.max_per_key = max_per_key
        self.max_running, self.max_queue = max_running, max_queue
        self._recent: dict[str | None, deque[float]] = {}
        self._last_sweep = 0.0

    def admit_rate(self, owner: str | None, now: float | None = None) -> None:
        """Count a request against its key's requests per minute; 429 past the limit."""
        if self.rpm is None:
            return
        now = time.monotonic() if now is None else now
        self._sweep(now)
        recent = self._recent.setdefault(owner, deque())
        _drop_older(recent, now)
        if len(recent) >= self.rpm:
            retry = max(1, math.ceil(_WINDOW_S - (now - recent[0])))
            raise APIError(
                429,
                f"rate limit reached: {self.rpm} requests per minute for this key; retry in {retry} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        recent.append(now)

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

    def _sweep(self, now: float) -> None:
        """Forget keys whose window has emptied, at most once a window, so memory follows active keys."""
        if now - self._last_sweep < _WINDOW_S:
            return
        self._last_sweep = now
        for owner in list(self._recent):
            _drop_older(self._recent[owner], now)
            if not self._recent[owner]:
                del self._recent[owner]


class FailedAuthThrottle:
    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._failures: dict[str, deque[float]] = {}
        self._last_sweep = 0.0

    def check(self, address: str, now: float | None = None) -> None:
        """429 while `address` has failed `burst` times within the last minute."""
        now = time.monotonic() if now is None else now
        recent = self._failures.get(address)
        if recent is None:
            return
        _drop_older(recent, now)
        if len(recent) >= self.burst:
            retry = max(1, math.ceil(_WINDOW_S - (now - recent[0])))
            raise APIError(
                429,
                f"too many failed authentications from this address; retry in {retry} s",
                code="too_many_auth_failures",
                headers={"Retry-After": str(retry)},
            )

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last_sweep >= _WINDOW_S:  # forget addresses that went quiet
            self._last_sweep = now
            for addr in list(self._failures):
                _drop_older(self._failures[addr], now)
                if not self._failures[addr]:
                    del self._failures[addr]
        self._failures.setdefault(address, deque()).append(now)


def _drop_older(recent: deque[float], now: float) -> None:
    while recent and now - recent[0] >= _WINDOW_S:
        recent.popleft()
