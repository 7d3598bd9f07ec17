"""Aggregate output tokens/s of the engine itself, no server, for each runner side by side.

Why in-process: it isolates what the runner costs (forward, cache moves, sampling) from HTTP and
SSE, so a change to a runner can be judged in seconds. Each level submits C requests of exactly
`--tokens` tokens (ignore_eos) at once and steps the engine until all finish; the time includes
prefill, as a client would see it.

    .venv/bin/python -m bench.engine_inprocess --runners llamacpp,transformers --levels 1,4,16,64
    .venv/bin/python -m bench.engine_inprocess --runners llamacpp --temperature 1 --seed 7 --repetition-penalty 1.15
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bench.idle import busy_fraction
from streamchat.chat.prompt import render
from streamchat.config import default_cache_dir
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.types import GenerationRequest, SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity to a child.",
    "List three fruits.",
    "What is 12 times 7?",
    "Say hello in Spanish.",
    "Describe a cat.",
    "Why is the sky blue?",
]
CACHE_TOKENS = 32768
MAX_SEQS = 64


def transformers_engine(args: argparse.Namespace, linear_dtype: str = "auto") -> Callable[[], LLMEngine]:
    import torch

    from streamchat.engine.transformers.loader import load_transformers
    from streamchat.engine.transformers.runner import TransformersRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_transformers(None, "cpu", "float32", default_cache_dir(), None, linear_dtype)

    def make() -> LLMEngine:
        runner = TransformersRunner(loaded.model)
        return LLMEngine(runner, loaded.tokenizer, loaded.eos_token_ids, loaded.max_model_len, MAX_SEQS, CACHE_TOKENS)

    make.tokenizer = loaded.tokenizer  # type: ignore[attr-defined]
    return make


def llamacpp_engine(args: argparse.Namespace, batch_invariant: bool = True) -> Callable[[], LLMEngine]:
    from streamchat.engine.llamacpp.loader import load_gguf
    from streamchat.engine.llamacpp.prefixes import PARK_SLOTS
    from streamchat.engine.llamacpp.runner import LlamaCppRunner
    from streamchat.engine.memory import DEFAULT_CONTEXT

    loaded = load_gguf(None, default_cache_dir(), None)
    runner = LlamaCppRunner(  # sized as the server's default: one stream of DEFAULT_CONTEXT cells per sequence
        loaded.model, DEFAULT_CONTEXT, MAX_SEQS, 512 + MAX_SEQS, args.threads, PARK_SLOTS, batch_invariant
    )
    n = runner.n_ctx_seq

    def make() -> LLMEngine:  # one context for all levels: it is cleared between them
        return LLMEngine(runner, loaded.tokenizer, loaded.eos_token_ids, n, MAX_SEQS, MAX_SEQS * n)

    make.tokenizer = loaded.tokenizer  # type: ignore[attr-defined]
    return make


RUNNERS: dict[str, Callable[[argparse.Namespace], Callable[[], LLMEngine]]] = {
    "transformers": transformers_engine,  # linear layers as the server runs them (bf16 where native)
    "transformers-fp32": lambda args: transformers_engine(args, linear_dtype="float32"),
    "llamacpp": llamacpp_engine,
    "llamacpp-bigubatch": lambda args: llamacpp_engine(args, batch_invariant=False),
}


def measure(
    make: Callable[[], LLMEngine], prompts: list[list[int]], level: int, tokens: int, sampling: dict | None = None
) -> tuple[float, float]:
    """(aggregate tokens/s, mean seconds to first token) for `level` requests started together;
    `sampling`: SamplingParams fields (default greedy, no penalty)."""
    engine = make()
    params = SamplingParams(max_tokens=tokens, ignore_eos=True, **({"temperature": 0.0} | (sampling or {})))
    reqs = [GenerationRequest(prompts[i % len(prompts)], params) for i in range(level)]
    started = time.perf_counter()
    for r in reqs:
        engine.add(r)
    first: dict[str, float] = {}
    produced = 0
    while engine.has_work:
        for rid, delta in engine.step():
            produced += len(delta.token_ids)
            first.setdefault(rid, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    assert produced == level * tokens, (produced, level * tokens)
    return produced / elapsed, sum(first.values()) / len(first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runners", default="llamacpp,transformers")
    p.add_argument("--levels", default="1,4,16,64")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="default: every core")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="each request seeded (its own generator)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="the embedded model's default is 1.15")
    args = p.parse_args()
    sampling = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
    }
    levels = [int(x) for x in args.levels.split(",")]
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()}, CPUs busy now {busy_fraction(1.0):.0%}")
    print(f"{'runner':<20}" + "".join(f"{'C=' + str(c):>16}" for c in levels) + "   (tok/s, mean TTFT s)")
    for name in args.runners.split(","):
        make = RUNNERS[name](args)
        prompts = [render(make.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]  # type: ignore[attr-defined]
        measure(make, prompts, 1, 4)  # warm-up
        cells = []
        for level in levels:
            rate, ttft = measure(make, prompts, level, args.tokens, sampling)
            cells.append(f"{rate:>9.1f} {ttft:>5.2f}s")
        print(f"{name:<20}" + "".join(f"{c:>16}" for c in cells), flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
