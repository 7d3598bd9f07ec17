"""A GGUF's tokenizer as a transformers tokenizer that splits text as llama.cpp does.

The server renders chat templates and encodes prompts with this tokenizer and hands the ids to
llama.cpp, so both must cut text the same way. Two things stand in the way for GLM GGUFs:

- `AutoTokenizer` reads the model's config from the GGUF first and refuses an architecture
  transformers cannot load (`glm4`, `chatglm`), although the tokenizer itself is an ordinary
  byte-level BPE. The backend class builds it from the tokenizer metadata alone.
- transformers knows no pre-tokenizer for `tokenizer.ggml.pre` = `glm4` / `chatglm-bpe` and falls
  back to GPT-2's split, which keeps " 12345" in one piece where GLM-4 (and llama.cpp) cut " ",
  "123", "45". We give it llama.cpp's split for these (`LLAMA_VOCAB_PRE_TYPE_CHATGLM4`), and for
  `glm4` llama.cpp's `ignore_merges` (a piece that is itself a token is taken whole).
"""

from __future__ import annotations

from pathlib import Path

from streamchat.engine.model_files import gguf_metadata, transformers_reads_gguf

# llama.cpp's regex for LLAMA_VOCAB_PRE_TYPE_CHATGLM4 (src/llama-vocab.cpp), which is GLM-4's own.
GLM_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GLM_PRE = {"chatglm-bpe": False, "glm4": True, "glm5": True}  # pre-tokenizer name → llama.cpp's ignore_merges


def tokenizer_from_gguf(path: Path) -> object:
    """The tokenizer `path` describes, whatever its architecture, splitting text as llama.cpp does."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    metadata = gguf_metadata(path)
    if transformers_reads_gguf(metadata.get("general.architecture")):
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path.parent, gguf_file=path.name)
    ignore_merges = GLM_PRE.get(str(metadata.get("tokenizer.ggml.pre")))
    if ignore_merges is not None:
        _split_as_glm(tokenizer.backend_tokenizer, ignore_merges)
    return tokenizer


def _split_as_glm(backend: object, ignore_merges: bool) -> None:
    from tokenizers import Regex, pre_tokenizers

    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GLM_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.model.ignore_merges = ignore_merges
