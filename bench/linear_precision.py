"""How far each fast CPU path moves the embedded model's predictions from plain float32.

The float32 model answers eight prompts greedily; then every variant reads the same token
sequences (teacher forcing) and is compared position by position with float32: how often its top
token agrees, and the mean KL divergence of its next-token distribution. llama.cpp's Q4_1 kernels
(activations quantized to 8 bits on the fly) are the yardstick a GGUF user already accepts.

    .venv/bin/python -m bench.linear_precision
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from streamchat.chat.prompt import render
from streamchat.config import default_cache_dir
from streamchat.engine.model_files import resolve_model
from streamchat.engine.transformers.bf16_linear import convert_linears
from streamchat.engine.transformers.exact_attention import use_exact_attention
from streamchat.engine.transformers.loader import load_transformers

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity to a child.",
    "List three fruits.",
    "Why is the sky blue?",
    "Give me a tip for learning to cook.",
    "What does a compiler do?",
    "请用中文介绍一下你自己。",
]
Logits = Callable[[torch.Tensor], torch.Tensor]  # token ids [n] -> next-token logits [n, vocab]


def transformers_logits(model: torch.nn.Module) -> Logits:
    return lambda ids: model(ids.unsqueeze(0)).logits[0].float()


def llamacpp_logits() -> Logits:
    import llama_cpp
    import numpy as np

    _, path = resolve_model(None)
    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=1024, verbose=False)

    def run(ids: torch.Tensor) -> torch.Tensor:
        llm.reset()
        llm.eval(ids.tolist())
        return torch.from_numpy(np.array(llm.scores[: len(ids)]))

    return run


def compare(reference: Logits, variant: Logits, sequences: list[tuple[torch.Tensor, int]]) -> tuple[float, float]:
    """(top-1 agreement, mean KL(float32 || variant)) over every generated position."""
    agree = total = 0
    kls = []
    for ids, prompt_len in sequences:
        ref = reference(ids)[prompt_len - 1 : -1].log_softmax(-1)
        got = variant(ids)[prompt_len - 1 : -1].log_softmax(-1)
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += ref.shape[0]
        kls.append(float(torch.nn.functional.kl_div(got, ref, log_target=True, reduction="batchmean")))
    return agree / total, sum(kls) / len(kls)


@torch.inference_mode()
def main() -> None:
    loaded = load_transformers(None, "cpu", "float32", default_cache_dir(), None, "float32")
    fp32 = loaded.model
    sequences = []
    for prompt in PROMPTS:
        ids = torch.tensor(render(loaded.tokenizer, [{"role": "user", "content": prompt}]))
        out = fp32.generate(ids.unsqueeze(0), max_new_tokens=64, do_sample=False)[0]
        sequences.append((out, len(ids)))
    server = copy.deepcopy(fp32)
    convert_linears(server)
    use_exact_attention(server)
    variants: dict[str, Logits] = {
        "bf16 linear products + float64 attention (streamchat, transformers engine)": transformers_logits(server),
        "whole model in bf16 (--dtype bfloat16)": transformers_logits(copy.deepcopy(fp32).bfloat16()),
        "llama.cpp Q4_1 kernels (streamchat, llamacpp engine)": llamacpp_logits(),
    }
    positions = sum(len(ids) - n for ids, n in sequences)
    print(f"{len(sequences)} answers, {positions} positions, reference: float32 transformers")
    print(f"{'variant':<76}{'top-1 agrees':>14}{'mean KL':>10}")
    for name, variant in variants.items():
        agreement, kl = compare(transformers_logits(fp32), variant, sequences)
        print(f"{name:<76}{agreement:>14.1%}{kl:>10.5f}", flush=True)


if __name__ == "__main__":
    main()
