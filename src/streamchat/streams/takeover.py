"""Streams that outlive their producer: leases, and what another process needs to continue an answer.

With a log shared by processes (Redis), the process producing a stream holds a lease on it and
renews it while it generates (`keep_lease`). A reader that reaches a process where the stream is
not live waits on the log; when the stream is not closed and its lease has expired (its producer
died), the reader's process claims the lease, atomically, so exactly one process wins, and
continues the answer from what the log holds (`Continuation`): the protocol's record written at
the start (prompt ids, sampling parameters, chunk ids) and the token ids of every step logged.
The losers' readers just follow the log.

A writer that finds the lease in another's hands (it was stalled past the lease and someone took
over) gets `LeaseLostError` and stops without writing: one writer per stream at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from streamchat.streams.log import Step, StreamEvent, StreamStoreUnavailableError

log = logging.getLogger(__name__)


class LeaseLostError(RuntimeError):
    """Another process holds this stream's lease now (or it was closed): this one must not write."""


class NotNowError(RuntimeError):
    """This process cannot continue the stream right now (model loading, server full): try later."""


@dataclass(frozen=True)
class Continuation:
    """What the log holds to continue a stream elsewhere."""

    record: dict[str, Any] | None  # the protocol's record (None: the stream cannot be continued)
    token_ids: tuple[int, ...]  # every token of the steps logged, in order
    final: bool  # the answer's last step is logged: only the protocol's end is missing


@dataclass(frozen=True)
class Adoption:
    """How a process continues a stream it took over: the rest of its events, and how it ends
    when cut short (a `manager.Closing`; None: OpenAI's)."""

    events: AsyncIterator[StreamEvent | Step]
    closing: Callable[..., list[StreamEvent]] | None = None


# Continues a stream this process has claimed: None when it cannot be continued at all (it is then
# ended with a `producer_lost` error); NotNowError when not now (the lease is given back).
Continuer = Callable[[str, Continuation], Awaitable[Adoption | None]]


@runtime_checkable
class LeasedLog(Protocol):
    """A stream log shared by processes, whose writers hold leases (`redis_log.py`)."""

    lease_ttl: float

    async def describe(self, stream_id: str, record: dict[str, Any]) -> None:
        """Keep `record` beside the stream: what a process needs to continue it."""
        ...

    async def renew(self, stream_id: str) -> bool:
        """Extend this process's lease; False when another process holds it now."""
        ...

    async def claim(self, stream_id: str) -> bool:
        """Take the lease of a stream that is not closed and whose lease has expired."""
        ...

    async def release(self, stream_id: str) -> None:
        """Give up a lease this process holds, without closing the stream."""
        ...

    async def continuation(self, stream_id: str) -> Continuation: ...


async def keep_lease(leases: LeasedLog, stream_id: str, on_lost: Callable[[], None]) -> None:
    """Renew the lease of a stream this process produces, a few times per lease, until cancelled;
    `on_lost` is told when another process has taken it."""
    period = max(0.05, leases.lease_ttl / 3)
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(StreamStoreUnavailableError):  # the producer's own writes end it
            if not await leases.renew(stream_id):
                log.warning("stream %s: lease taken by another process; this one stops writing", stream_id)
                on_lost()
                return
