"""The token ids an answer ends on: every EOS a model lists, and the turn tokens of the GLM family.

A model may list several EOS ids: GLM-4's `generation_config.json` says
`eos_token_id: [151329, 151336, 151338]` (`<|endoftext|>`, `<|user|>`, `<|observation|>`), because
a chat model's answer is over when it starts the next turn, the user's or a tool's. Not every file
says so: a GGUF stores one EOS and one EOT id (the converter writes `<|endoftext|>` and `<|user|>`;
llama.cpp never counts `<|observation|>`, the turn a tool call hands over), and a folder's
`generation_config.json` may list only one. A GLM vocabulary (it holds `[gMASK]`, the mark every
GLM prompt starts with) therefore always ends on all three turn tokens it holds, on either engine.
"""

from __future__ import annotations

from collections.abc import Mapping

GLM_MARK = "[gMASK]"
GLM_TURN_ENDS = ("<|endoftext|>", "<|user|>", "<|observation|>")


def listed_eos_ids(*sources: object) -> set[int]:
    """Every id the sources' `eos_token_id` names: a generation config's list, a tokenizer's one id."""
    ids: set[int] = set()
    for source in sources:
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    return ids


def turn_end_ids(tokenizer: object) -> set[int]:
    """The ids of GLM's turn tokens when `tokenizer` is a GLM vocabulary, else none."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    vocab: Mapping[str, int] = get_vocab() if callable(get_vocab) else {}
    if GLM_MARK not in vocab:
        return set()
    return {vocab[token] for token in GLM_TURN_ENDS if token in vocab}
