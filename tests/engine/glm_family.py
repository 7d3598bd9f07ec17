"""Tiny random GLM models written by the tests: transformers' `GlmForCausalLM` (glm-4-9b-chat-hf's
class) and `Glm4ForCausalLM` (GLM-4-0414's), each saved as a model folder and converted to an F32 GGUF.

Nothing is downloaded. The tokenizer is the embedded model's byte-level BPE plus GLM-4's special
tokens, with `<|endoftext|>` as EOS and the chat template glm-4-9b-chat-hf ships (its tool block
left out); `generation_config.json` lists three EOS ids as GLM-4's does (`<|endoftext|>`,
`<|user|>`, `<|observation|>`) and its sampling values (temperature 0.8, top_p 0.8).

The weights are random, but each stop token is planted where a test can see it: for each of three
questions, the greedy answer ends on one of the three stop tokens at a known step. The stop
token's LM-head row is set orthogonal to every final hidden state on the three greedy paths except
the one where it must win, where it beats the best other logit by `MARGIN`; nothing else changes,
so each answer is the model's own greedy path up to its planted stop.

GGUF conversion runs llama.cpp's own `convert_hf_to_gguf.py`, from the llama.cpp tree
`bench/build_llama_server.sh` unpacks from llama-cpp-python's sdist (or from that sdist directly).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from streamchat.chat.prompt import render

ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP_TREE = ROOT / "bench" / ".cache" / "llama.cpp-src"
SDISTS = ROOT / "bench" / ".cache" / "sdist"

GLM_SPECIAL = [
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
]
# glm-4-9b-chat-hf's template without its tool block: `[gMASK]<sop><|user|>\n…<|assistant|>`.
TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n"
    "{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
STOPS = ("<|endoftext|>", "<|user|>", "<|observation|>")  # generation_config's eos_token_id, in GLM-4's order
# question → (the stop token its greedy answer ends on, the answer token it lands at)
PLANTED = {
    "Say hi.": ("<|endoftext|>", 2),
    "你好，请介绍一下你自己。": ("<|user|>", 4),
    "What is the weather?": ("<|observation|>", 6),
}
OTHER_QUESTIONS = ("List three fruits.", "12345 + 678 = ?", "Describe a cat.", "Why is the sky blue?", "写一首诗。")
MARGIN = 3.0  # the planted stop's logit over the best other one (random logits here: std ~1.6)
SAMPLING = {"temperature": 0.8, "top_p": 0.8}  # what glm-4-9b-chat's generation_config.json sets
CLASSES = {"glm": "GlmForCausalLM", "glm4": "Glm4ForCausalLM"}
NO_CONVERTER = (
    "converting to GGUF needs llama.cpp's convert_hf_to_gguf.py: run bench/build_llama_server.sh, which "
    "fetches llama-cpp-python's sdist (it carries the llama.cpp tree) into bench/.cache"
)


@dataclass
class GlmModel:
    name: str  # "glm" (GlmForCausalLM → GGUF `chatglm`) or "glm4" (Glm4ForCausalLM → GGUF `glm4`)
    folder: Path
    gguf: Path | None  # None when llama.cpp's converter is not at hand
    answers: dict[str, list[int]] = field(default_factory=dict)  # planted question → greedy ids, stop included


def glm_tokenizer() -> object:
    """The embedded model's tokenizer made GLM-4's: its special tokens, EOS and chat template."""
    from streamchat.config import default_cache_dir
    from streamchat.engine.llamacpp.loader import gguf_tokenizer
    from streamchat.engine.model_files import embedded_gguf

    tokenizer = gguf_tokenizer(embedded_gguf(), default_cache_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": GLM_SPECIAL}, replace_extra_special_tokens=False)
    tokenizer.eos_token = tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def prompt(tokenizer: object, question: str) -> list[int]:
    return render(tokenizer, [{"role": "user", "content": question}])


@functools.cache
def built(root: Path) -> dict[str, GlmModel]:
    """Both models under `root`, built once per test session (every module asks with the same root)."""
    tokenizer = glm_tokenizer()
    models = {name: _build(name, cls, tokenizer, root / name) for name, cls in CLASSES.items()}
    converter = _converter(root)
    if converter is not None:
        _convert(converter, models)
    return models


def models_for(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GlmModel]:
    return built(tmp_path_factory.getbasetemp() / "glm-models")


def _build(name: str, class_name: str, tokenizer: object, folder: Path) -> GlmModel:
    import transformers

    cls = getattr(transformers, class_name)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in STOPS]
    config = cls.config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,  # llama.cpp's `chatglm` converter writes 1e-5 whatever the config says
        eos_token_id=stops,
        pad_token_id=stops[0],
    )
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():  # wide enough that greedy picks are never near-ties
            p.normal_(1.0, 0.1) if "norm" in pname else p.normal_(0.0, 0.2)
        answers = _plant_stops(model, tokenizer, stops)
    model.generation_config.update(**SAMPLING, do_sample=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return GlmModel(name, folder, None, answers)


def _plant_stops(model: torch.nn.Module, tokenizer: object, stops: list[int]) -> dict[str, list[int]]:
    """Make each planted question's greedy answer end on its stop token at its step (see the module doc)."""
    head = model.get_output_embeddings().weight
    head[stops] = 0.0  # no stop wins anywhere by chance
    paths = {q: _greedy_path(model, prompt(tokenizer, q), step + 1) for q, (_, step) in PLANTED.items()}
    states = [(q, i, h) for q, (_, hs) in paths.items() for i, h in enumerate(hs)]
    for question, (stop, step) in PLANTED.items():
        target = paths[question][1][step]
        others = torch.stack([h for q, i, h in states if (q, i) != (question, step)])
        basis, _ = torch.linalg.qr(others.T)  # the span of every other state on the paths
        free = target - basis @ (basis.T @ target)
        best = (head @ target).max()
        head[tokenizer.convert_tokens_to_ids(stop)] = free * (best + MARGIN) / (free @ target)
    answers = {}
    for question, (stop, step) in PLANTED.items():
        ids, _ = _greedy_path(model, prompt(tokenizer, question), step + 1)
        assert ids[-1] == tokenizer.convert_tokens_to_ids(stop) and stop not in ids[:-1], (question, ids)
        answers[question] = ids
    return answers


def _greedy_path(model: torch.nn.Module, ids: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """The greedy answer's ids and, for each, the final hidden state it was picked from."""
    out, states = list(ids), []
    for _ in range(steps):
        h = model.base_model(torch.tensor([out])).last_hidden_state[0, -1]
        states.append(h)
        out.append(int(model.get_output_embeddings()(h).argmax()))
    return out[len(ids) :], states


def _converter(root: Path) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: in bench's llama.cpp tree, or unpacked from the sdist it came from."""
    if (LLAMA_CPP_TREE / "convert_hf_to_gguf.py").is_file():
        return LLAMA_CPP_TREE / "convert_hf_to_gguf.py"
    sdists = sorted(SDISTS.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        return None
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdists[-1]) as tar:
        members = [m for m in tar.getmembers() if m.name.partition("/vendor/llama.cpp/")[2].startswith(wanted)]
        tar.extractall(root / "sdist", members=members, filter="data")
    found = list((root / "sdist").glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    return found[0] if found else None


def _convert(converter: Path, models: dict[str, GlmModel]) -> None:
    """Both conversions at once (each is mostly imports); a failure shows the converter's own words."""
    runs = {}
    for model in models.values():
        model.gguf = model.folder.with_suffix(".f32.gguf")
        cmd = [sys.executable, str(converter), "--outtype", "f32", "--outfile", str(model.gguf), str(model.folder)]
        runs[model.name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, run in runs.items():
        output, _ = run.communicate(timeout=240)
        assert run.returncode == 0, f"converting {name} failed:\n{output[-3000:]}"


def needs_gguf(model: GlmModel) -> Path:
    """The model's GGUF, or a skip that says how to get llama.cpp's converter."""
    if model.gguf is None:
        pytest.skip(NO_CONVERTER)
    return model.gguf
