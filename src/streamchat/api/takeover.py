"""Continuing a stream whose producer died in another process (`streams/takeover.py` decides when).

Taken over: OpenAI chat completions and completions of free text (no grammar, no tool-call
reading). Their continuation record holds the chunks' id, `created` and model name, whether a
usage chunk ends the answer, the prompt's token ids and the sampling parameters; the log holds the
token ids of every step it sent. The request goes back into the engine with the prompt and those
tokens (`GenerationRequest.output_token_ids`): the engine replays them silently, so the next chunk's
text continues exactly where the sent text ended, and greedy and seeded answers come out as the
uninterrupted one would have. Any other stream (another protocol, a grammar, a model not served
here) is ended with a `producer_lost` error by the manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from streamchat.api.errors import APIError
from streamchat.api.openai import CHAT, COMPLETION, openai_events
from streamchat.api.openai_shapes import ChatShape, CompletionShape, Shape
from streamchat.api.ready import ready_now
from streamchat.api.state import ServerState
from streamchat.api.submission import admit, submit
from streamchat.engine.types import GenerationRequest, SamplingParams
from streamchat.sse.framing import DONE
from streamchat.streams.log import Step, StreamEvent
from streamchat.streams.takeover import Adoption, Continuation, Continuer, NotNowError


def continuer(state: ServerState) -> Continuer:
    """The manager's continuer for this server's engine and model."""

    async def continue_stream(stream_id: str, continuation: Continuation) -> Adoption | None:
        record = continuation.record
        if record is None or record.get("protocol") not in (CHAT, COMPLETION):
            return None
        if continuation.final:  # the whole answer was logged; only its end is missing
            return Adoption(_done())
        owner = await state.streams.log.owner(stream_id)
        opened = await state.streams.last_seq(stream_id) >= 0  # else it died before its opening chunk
        params = record["params"]
        request = GenerationRequest(
            list(record["prompt"]),
            SamplingParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}),
            output_token_ids=continuation.token_ids,
        )
        try:
            ready = ready_now(state)
            ready.check_model_name(record["model"])
            admit(ready, owner)
            deltas = submit(ready, request, owner)
        except APIError as exc:
            if exc.status in (400, 404):  # a model this server does not serve, or cannot continue with
                return None
            raise NotNowError(exc.message) from exc
        events = openai_events(deltas, _shape(record), record["include_usage"], opened=opened)
        return Adoption(events)

    return continue_stream


def _shape(record: dict) -> Shape:
    """The chunks' envelope as the first process made it: same id, `created` and model."""
    shape: Shape = (ChatShape if record["protocol"] == CHAT else CompletionShape)(record["id"], record["model"])
    shape.created = record["created"]
    return shape


async def _done() -> AsyncIterator[StreamEvent | Step]:
    yield StreamEvent(None, DONE)
