"""`engine/llamacpp/tokenizer.py`: a GGUF's tokenizer, rebuilt for transformers, cuts text as llama.cpp does.

The files here hold only a vocabulary (llama.cpp loads them with `vocab_only`): the GLM test
tokenizer's tokens and merges, under GLM-4's pre-tokenizer names, plus two tokens that make the
split show. The embedded vocabulary spells digits one by one, so GPT-2's split (" 12345" is one
piece) and GLM's (" ", "123", "45") would give the same ids; a merge `Ġ 1` joins a space to a digit
only where the space stays in the digits' piece, and a token `45` that no merge builds is taken
whole only with llama.cpp's `ignore_merges` (pre-tokenizer `glm4`, not `chatglm-bpe`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

llama = pytest.importorskip("llama_cpp", reason="comparing with llama.cpp's tokenizer needs llama-cpp-python")

from streamchat.engine.llamacpp.tokenizer import tokenizer_from_gguf  # noqa: E402

from ..glm_family import glm_tokenizer  # noqa: E402

# Digit runs (GLM cuts them in threes), punctuation before letters, Chinese, spaces and newlines.
TEXTS = [
    "12345 + 678 = 13023, and 3.14159! 145 4545",
    "你好，世界。我想在apple工作1314151天～",
    "  indented\n\n\tline --flag=value 'quoted' I've we'LL",
    "<|user|>\n[gMASK]<sop>hi<|assistant|>",
]

EXTRA_TOKENS, EXTRA_MERGE = ["Ġ1", "45"], "Ġ 1"


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return glm_tokenizer()


def vocab_gguf(tokenizer: object, path: Path, pre: str) -> Path:
    """A vocabulary-only `glm4` GGUF of `tokenizer`, with `pre` as its pre-tokenizer's name."""
    from gguf import GGUFWriter, TokenType

    vocab = tokenizer.get_vocab()
    tokens = [*sorted(vocab, key=vocab.get), *EXTRA_TOKENS]
    special = set(tokenizer.all_special_tokens)
    merges = [*json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"], EXTRA_MERGE]
    writer = GGUFWriter(str(path), "glm4")
    writer.add_block_count(1)  # hyperparameters llama.cpp reads even for a vocabulary
    writer.add_context_length(512)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(8)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama_cpp_ids(path: Path, text: str) -> list[int]:
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        vocab = llama.llama_model_get_vocab(model)
        data = text.encode()
        buf = (llama.llama_token * (len(data) + 8))()
        n = llama.llama_tokenize(vocab, data, len(data), buf, len(buf), False, True)
        assert n >= 0
        return list(buf[:n])
    finally:
        llama.llama_model_free(model)


@pytest.mark.parametrize(("pre", "digits"), [("glm4", ["Ġ", "1", "2", "3", "45"]), ("chatglm-bpe", list("Ġ12345"))])
def test_glm_pre_tokenizers_cut_text_as_llama_cpp_does(tokenizer: object, tmp_path: Path, pre: str, digits) -> None:
    """Regression: transformers has no split for GLM's pre-tokenizer names and fell back to GPT-2's,
    which keeps " 12345" in one piece where GLM-4 and llama.cpp cut " ", "123", "45"."""
    path = vocab_gguf(tokenizer, tmp_path / f"{pre}.gguf", pre)
    rebuilt = tokenizer_from_gguf(path)
    for text in TEXTS:
        assert rebuilt.encode(text, add_special_tokens=False) == llama_cpp_ids(path, text), text
    assert rebuilt.convert_ids_to_tokens(rebuilt.encode(" 12345", add_special_tokens=False)) == digits


def test_an_architecture_transformers_cannot_load_still_gives_its_tokenizer(tokenizer: object, tmp_path: Path) -> None:
    """Regression: AutoTokenizer reads the model's config from the GGUF first and refused `glm4`."""
    rebuilt = tokenizer_from_gguf(vocab_gguf(tokenizer, tmp_path / "glm4.gguf", "glm4"))
    assert len(rebuilt) == len(tokenizer) + len(EXTRA_TOKENS)
    assert rebuilt.eos_token == "<|endoftext|>"
    assert rebuilt.convert_tokens_to_ids("<|observation|>") == tokenizer.convert_tokens_to_ids("<|observation|>")
