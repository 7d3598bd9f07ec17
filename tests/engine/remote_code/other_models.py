"""More model folders with code of their own: one that transformers' batching engine can serve, and
two with code written for older transformers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

REMOTE_LLAMA_CONFIGURATION = """
from transformers import LlamaConfig


class RemoteLlamaConfig(LlamaConfig):
    model_type = "remote_llama"
"""

REMOTE_LLAMA_MODELING = """
from transformers import LlamaForCausalLM

from .configuration_remote_llama import RemoteLlamaConfig


class RemoteLlamaForCausalLM(LlamaForCausalLM):
    config_class = RemoteLlamaConfig
"""

OLD_CACHE_MODELING = '''
import torch
from transformers import PreTrainedModel, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast


class OldCacheConfig(PretrainedConfig):
    model_type = "old_cache"

    def __init__(self, vocab_size=49152, hidden_size=8, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(**kwargs)


class OldCacheForCausalLM(PreTrainedModel):
    """Keeps keys and values as tuples, as ChatGLM2's code does: past_key_values[layer][0]."""

    config_class = OldCacheConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, past_key_values=None, use_cache=None, **kwargs):
        past = past_key_values[0][0].shape[0] if past_key_values is not None else 0
        hidden = self.embed(input_ids)
        presents = ((hidden[:, past:], hidden[:, past:]),)
        return CausalLMOutputWithPast(logits=self.head(hidden), past_key_values=presents)
'''

LATE_ATTRIBUTES_TOKENIZER = '''
from transformers import PreTrainedTokenizer


class LateTokenizer(PreTrainedTokenizer):
    """Sets its vocabulary after super().__init__(), which reads it since transformers 4.34."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.letters = {chr(97 + i): i for i in range(26)}

    @property
    def vocab_size(self):
        return len(self.letters)

    def get_vocab(self):
        return dict(self.letters)

    def _tokenize(self, text):
        return list(text)

    def _convert_token_to_id(self, token):
        return self.letters.get(token, 0)

    def _convert_id_to_token(self, index):
        return chr(97 + index)
'''


def write_remote_llama(folder: Path, tokenizer) -> Path:
    """A tiny random Llama under a class of the folder's own: its forward takes transformers' Cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_remote_llama.py").write_text(REMOTE_LLAMA_CONFIGURATION, encoding="utf-8")
    (folder / "modeling_remote_llama.py").write_text(REMOTE_LLAMA_MODELING, encoding="utf-8")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    saved = config.to_dict()
    saved.update(
        model_type="remote_llama",
        architectures=["RemoteLlamaForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_remote_llama.RemoteLlamaConfig",
            "AutoModelForCausalLM": "modeling_remote_llama.RemoteLlamaForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    return folder


def write_old_cache_model(folder: Path, tokenizer) -> Path:
    """A causal LM whose forward indexes the old tuple cache, and which has no stream_chat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_old_cache.py").write_text(OLD_CACHE_MODELING, encoding="utf-8")
    config = {
        "model_type": "old_cache",
        "auto_map": {
            "AutoConfig": "modeling_old_cache.OldCacheConfig",
            "AutoModelForCausalLM": "modeling_old_cache.OldCacheForCausalLM",
        },
        "vocab_size": len(tokenizer),
        "hidden_size": 8,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab = len(tokenizer)
    save_file(
        {"embed.weight": torch.zeros(vocab, 8), "head.weight": torch.zeros(vocab, 8)}, str(folder / "model.safetensors")
    )
    tokenizer.save_pretrained(folder)
    return folder


def add_late_attributes_tokenizer(folder: Path) -> Path:
    """Replace a model folder's tokenizer with one that sets its attributes after super().__init__()."""
    (folder / "tokenization_late.py").write_text(LATE_ATTRIBUTES_TOKENIZER, encoding="utf-8")
    for name in ("tokenizer.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    config = {
        "tokenizer_class": "LateTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_late.LateTokenizer", None]},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder
