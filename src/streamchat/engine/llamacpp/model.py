"""A GGUF file's weights loaded by llama.cpp (mmap), and what they tell about the model."""

from __future__ import annotations

from pathlib import Path

import llama_cpp as llama


def _quiet_llama_logs(verbose: bool) -> None:
    """llama.cpp logs every tensor at load; keep its errors only unless debugging."""
    from llama_cpp import _logger

    _logger.set_verbose(verbose)


class LlamaModel:
    """The weights of a GGUF file, loaded once (mmap), shared by the context that runs them."""

    def __init__(self, path: Path, verbose: bool = False) -> None:
        _quiet_llama_logs(verbose)
        llama.llama_backend_init()
        params = llama.llama_model_default_params()
        self.ptr = llama.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.path = path
        self.vocab = llama.llama_model_get_vocab(self.ptr)
        self.n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self.ptr)
        self.n_layer = llama.llama_model_n_layer(self.ptr)

    @property
    def probe_token(self) -> int:
        """A token to write where its keys and values can be recognised (any ordinary one)."""
        return llama.llama_vocab_bos(self.vocab) if llama.llama_vocab_bos(self.vocab) >= 0 else 0

    @property
    def kv_bytes_per_token(self) -> int:
        """f16 keys and values for every layer (llama.cpp's default cache type)."""
        m = self.ptr
        head_dim = llama.llama_model_n_embd(m) // llama.llama_model_n_head(m)
        return 2 * llama.llama_model_n_layer(m) * llama.llama_model_n_head_kv(m) * head_dim * 2

    def eog_token_ids(self) -> set[int]:
        """Every token llama.cpp itself treats as end of generation (EOS, EOT, `<|im_end|>`…)."""
        return {t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(self.vocab, t)}

    def close(self) -> None:
        if self.ptr:
            llama.llama_model_free(self.ptr)
            self.ptr = None
