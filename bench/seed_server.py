"""The seed's blocking design, reproduced on the benchmark model as the baseline to beat.

As in the blog post in ``shared/seed/``: FastAPI + sse-starlette, ``POST /stream`` with
``{prompt, history}``, and the model's token loop running *inside the response's async generator*.
Each forward pass therefore blocks the event loop: concurrent requests take turns token by token
and nothing else (other streams, new connections) is served meanwhile. That is deliberate here.

Extra body fields ``max_new_tokens`` / ``min_new_tokens`` force exact answer lengths so that the
comparison with other servers is fair; ``temperature`` 0 means greedy decoding.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Iterator
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sse_starlette.sse import EventSourceResponse
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from bench.models import load_gguf

app = FastAPI()
app.add_middleware(
    CORSMiddleware, allow_origins=["*"], allow_credentials=False, allow_methods=["*"], allow_headers=["*"]
)
MODEL: PreTrainedModel | None = None
TOKENIZER: PreTrainedTokenizerBase | None = None


def _messages(prompt: str, history: list[list[str]]) -> list[dict[str, str]]:
    """ChatGLM-style ``[[question, answer], ...]`` history as chat-template messages."""
    messages: list[dict[str, str]] = []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": prompt}]


def _pick(logits: torch.Tensor, temperature: float, top_p: float) -> int:
    """Greedy when temperature is 0, else nucleus sampling. logits: [vocab]."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
    sorted_probs = sorted_probs * keep
    return int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1)])


@torch.inference_mode()
def stream_chat(prompt: str, history: list[list[str]], options: dict[str, Any]) -> Iterator[str]:
    """Yield the whole answer so far after every token, like ChatGLM's ``model.stream_chat``."""
    assert MODEL is not None and TOKENIZER is not None
    ids = TOKENIZER.apply_chat_template(_messages(prompt, history), add_generation_prompt=True, return_dict=False)
    input_ids = torch.tensor([ids])  # [1, prompt_len]
    budget = int(options.get("max_length", 2048)) - len(ids)
    max_new = min(int(options.get("max_new_tokens", budget)), budget)
    min_new = int(options.get("min_new_tokens", 0))
    cache, answer = DynamicCache(), []
    for step in range(max_new):
        logits = MODEL(input_ids=input_ids, past_key_values=cache, use_cache=True).logits[0, -1]  # [vocab]
        if step < min_new:
            logits[TOKENIZER.eos_token_id] = -float("inf")
        token = _pick(logits, float(options.get("temperature", 0.95)), float(options.get("top_p", 0.7)))
        if token == TOKENIZER.eos_token_id:
            return
        answer.append(token)
        input_ids = torch.tensor([[token]])
        text = TOKENIZER.decode(answer, skip_special_tokens=True)
        yield text.removesuffix("\ufffd")  # hold back half a UTF-8 character


@app.post("/stream")
async def stream(arg_dict: dict) -> EventSourceResponse:
    """The seed's handler: one event per generated token, then ``[DONE]``."""

    async def get_stream():  # noqa: ANN202 - sse-starlette takes any async iterator
        size = 0
        history = arg_dict.get("history") or []
        for response in stream_chat(arg_dict["prompt"], history[-5:], arg_dict):  # blocks the loop
            word, size = response[size:], len(response)
            time = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            yield {"data": json.dumps({"id": 0, "time": time, "text": word}, ensure_ascii=False)}
        yield {"data": "[DONE]"}

    return EventSourceResponse(get_stream())


def main() -> None:
    """Load the model, then serve (the seed loads before ``uvicorn.run`` too)."""
    global MODEL, TOKENIZER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args()
    MODEL, TOKENIZER = load_gguf()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
