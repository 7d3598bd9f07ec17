"""Per-key limits: requests per minute and requests in flight, each refused with 429 + Retry-After.

The minute is a sliding window of request times per key; the in-flight count is read from the
engine's table of pending requests, which forgets a request the moment it finishes, so a client
that vanishes cannot leak a slot. Requests without a key (an open server) share one bucket.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

from streamchat.api.errors import APIError

_WINDOW_S = 60.0


class KeyLimiter:
    def __init__(self, rpm: int | None, max_concurrent: int | None) -> None:
        self.rpm = rpm
        self.max_concurrent = max_concurrent
        self._recent: dict[str | None, deque[float]] = defaultdict(deque)

    def admit_request(self, key: str | None, now: float | None = None) -> None:
        if self.rpm is None:
            return
        now = time.monotonic() if now is None else now
        recent = self._recent[key]
        while recent and now - recent[0] >= _WINDOW_S:
            recent.popleft()
        if len(recent) >= self.rpm:
            retry = max(1, math.ceil(_WINDOW_S - (now - recent[0])))
            raise APIError(
                429,
                f"rate limit reached: {self.rpm} requests per minute for this key; retry in {retry} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        recent.append(now)
        if not recent:
            del self._recent[key]

    def check_concurrency(self, key: str | None, in_flight: int) -> None:
        if self.max_concurrent is not None and in_flight >= self.max_concurrent:
            raise APIError(
                429,
                f"too many requests in flight for this key (limit {self.max_concurrent}); retry when one finishes",
                code="concurrency_limit_exceeded",
                headers={"Retry-After": "1"},
            )


def check_prompt_tokens(limit: int | None, prompt_tokens: int, param: str) -> None:
    if limit is not None and prompt_tokens > limit:
        raise APIError(
            400,
            f"the prompt has {prompt_tokens} tokens; this server accepts at most {limit}",
            param=param,
            code="prompt_too_long",
        )


def check_max_tokens(limit: int | None, asked: int | None, param: str = "max_tokens") -> None:
    if limit is not None and asked is not None and asked > limit:
        raise APIError(
            400, f"'{param}' is {asked}; this server allows at most {limit}", param=param, code="max_tokens_too_large"
        )
