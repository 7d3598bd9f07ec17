"""Handing a request to the engine, in plain code: admit it, submit it, answer with its stream.

Every model route passes here, in this order:

1. `admit(ready, owner)` before any tokenizer work: 429 when the caller or the server is full;
2. `submit(ready, request)`: queue the request in the engine (at once, so the next admission
   counts it) and compose what watches its deltas: the metrics' timings and, with
   `--log-prompts`, the answer log;
3. for a stream, `stream_response(ready, events, resumable, owner)`: a producer task writes the
   protocol's events into the stream log and the response reads them back (`streams/manager.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import Response

from streamchat.api.errors import APIError
from streamchat.api.ready import Ready, engine_stopped
from streamchat.api.request_log import log_answer
from streamchat.engine.async_engine import EngineDeadError, RequestNotSupportedError
from streamchat.engine.types import Delta, GenerationRequest
from streamchat.sse.response import sse_response
from streamchat.streams.log import Step, StreamEvent
from streamchat.streams.manager import Closing


def admit(ready: Ready, owner: str | None) -> None:
    ready.state.admission.admit_work(ready.engine, owner)


def submit(ready: Ready, request: GenerationRequest, owner: str | None) -> AsyncIterator[Delta]:
    """Queue `request` for `owner` and return its deltas; closing them aborts the request."""
    request.owner = owner
    try:
        generated = ready.engine.generate(request)
    except EngineDeadError as exc:  # the engine died after readiness was checked
        raise engine_stopped() from exc
    except RequestNotSupportedError as exc:
        raise APIError(400, str(exc), param=exc.param) from exc
    deltas = ready.state.metrics.observe(generated)
    if ready.state.settings.log_prompts:
        deltas = log_answer(deltas)
    return deltas


async def stream_response(
    ready: Ready,
    events: AsyncIterator[StreamEvent | Step],
    resumable: bool,
    owner: str | None,
    closing: Closing | None = None,
    continuation: dict | None = None,
) -> Response:
    """Start producing `events` into a new stream of `owner`'s and answer with it, from its first event;
    `closing`: the events that end it when cut short, in the protocol's shape (default: OpenAI's);
    `continuation`: what another process needs to continue it (`api/takeover.py`)."""
    streams = ready.state.streams
    stream_id = await streams.start(events, resumable, owner, closing=closing, continuation=continuation)
    return sse_response(
        streams.read(stream_id), ping_interval=ready.state.settings.ping_interval, headers={"X-Stream-Id": stream_id}
    )
