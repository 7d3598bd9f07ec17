"""Old remote code under transformers 5: fixed where the fix is safe, otherwise named with its fix.

ChatGLM-era modelling code was written for transformers 4.2x-4.3x. Four things break:

1. Tokenizers that set their attributes after `super().__init__()`: since 4.34 the base
   `__init__` reads the vocabulary, so it fails with "has no attribute". Not fixable from outside
   (the attributes come from the code that has not run yet): named, with its fix.
2. `GenerationMixin` is no longer part of every `PreTrainedModel` (4.50): a model whose
   stream_chat/chat calls `self.generate` loses it. transformers re-adds it to remote classes
   that define `prepare_inputs_for_generation`; `with_generation_mixin` adds it to one that
   offers stream_chat/chat but has no `generate` at all. Safe: the class's own methods still come
   first.
3. `post_init()` is required (5.0): a model whose `__init__` never calls it fails to load on
   `all_tied_weights_keys`. `calling_post_init` gives the class an `__init__` that calls it
   afterwards, which is what the missing line would have done.
4. The cache: transformers 5 hands models `Cache` objects and dropped the old tuple format that
   ChatGLM's code indexes (`past_key_values[layer][0]`). Not fixable from outside: named.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_CACHE_SIGNS = re.compile(
    r"Cache|past_key_values|get_seq_length|get_usable_length|seen_tokens|legacy_cache|'tuple' object", re.I
)
_REMOVED_INTERNALS = re.compile(r"_get_logits_warper|_extract_past_from_model_output|_get_stopping_criteria")
_UPGRADE = (
    "use a revision of the model's code written for transformers 5, or its `-hf` variant, which transformers "
    "implements itself (such as THUDM/glm-4-9b-chat-hf; no --trust-remote-code needed)"
)


class RemoteCodeError(RuntimeError):
    """A model's own code cannot run here; the message names the cause and the fix."""


def explain(exc: BaseException, stage: str = "") -> str | None:
    """Cause and fix of a known breakage of old remote code, or None for anything else.

    `stage` is "tokenizer" while the tokenizer loads.
    """
    seen = f"{type(exc).__name__}: {exc}"
    if stage == "tokenizer" and isinstance(exc, AttributeError) and "has no attribute" in str(exc):
        attribute = _attribute(exc)
        return (
            f"the tokenizer's own code reads `{attribute}` before its __init__ sets it ({seen}): since transformers "
            "4.34, PreTrainedTokenizer.__init__ reads the vocabulary, so a tokenizer must set its attributes before "
            "calling super().__init__(). Fix: take the model's current tokenization file (ChatGLM's repositories "
            "fixed this), or move the super().__init__(...) call in the tokenizer's __init__ below the lines that "
            "set its attributes"
        )
    if "all_tied_weights_keys" in str(exc):
        return (
            f"the model's __init__ never calls self.post_init(), which transformers 5 requires ({seen}). "
            "Fix: add self.post_init() as the last line of the model class's __init__"
        )
    if isinstance(exc, AttributeError) and re.search(r"attribute '?generate'?$", str(exc)):
        return (
            f"the model's code calls self.generate, which PreTrainedModel no longer provides since transformers "
            f"4.50 ({seen}). Fix: let the model class inherit from GenerationMixin after PreTrainedModel"
        )
    if _REMOVED_INTERNALS.search(str(exc)):
        return f"the model's code calls generation internals that transformers 5 removed ({seen}). Fix: {_UPGRADE}"
    if _CACHE_SIGNS.search(str(exc)):
        return (
            "the model's code appears to keep its attention cache as the old tuples (past_key_values[layer] = "
            f"(key, value)), which transformers 5 replaced with Cache objects ({seen}). Fix: {_UPGRADE}"
        )
    return None


def described(exc: BaseException, stage: str = "") -> str:
    """The known cause and fix, or the error as it was."""
    return explain(exc, stage) or f"{type(exc).__name__}: {exc}"


def with_generation_mixin(cls: type) -> type:
    """`cls` with GenerationMixin behind it when it offers stream_chat/chat and has no `generate`."""
    from transformers import GenerationMixin
    from transformers.models.auto.auto_factory import add_generation_mixin_to_remote_model

    cls = add_generation_mixin_to_remote_model(cls)  # transformers' own repair
    if hasattr(cls, "generate") or not (hasattr(cls, "stream_chat") or hasattr(cls, "chat")):
        return cls
    log.info("%s has no generate(): adding GenerationMixin, which transformers 4.50 stopped implying", cls.__name__)
    return type(cls.__name__, (cls, GenerationMixin), {"__module__": cls.__module__})


def calling_post_init(cls: type) -> type:
    """`cls` whose instances end their __init__ with post_init() when the class's own did not."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cls.__init__(self, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):
            self.post_init()

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})


def _attribute(exc: AttributeError) -> str:
    name = getattr(exc, "name", None)
    if name:
        return str(name)
    found = re.search(r"has no attribute '?(\w+)'?", str(exc))
    return found.group(1) if found else "an attribute"
