"""Grammar text → a ready `Constraint`, validated, off the engine thread.

llguidance needs the model's vocabulary as an `LLTokenizer` (built once, ~0.3 s, on first use).
A grammar is validated before it is used, so a schema it cannot enforce is refused with
llguidance's own message instead of being ignored. Compiled grammars are kept (bounded) and each
request gets a copy of the compiled matcher, so a schema sent again costs nothing to compile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import llguidance
import llguidance.hf

from streamchat.engine.grammar.constraint import Constraint


class GrammarError(ValueError):
    """The grammar cannot be compiled; the message says why, in llguidance's words."""


class GrammarCompiler:
    def __init__(self, tokenizer: object, eos_token_ids: set[int], keep: int = 256) -> None:
        self._hf_tokenizer = tokenizer
        self._eos = sorted(eos_token_ids)
        self._lltokenizer: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def compile(self, grammar: str, description: str) -> Constraint:
        """A fresh constraint for one request. Blocking: call it from a worker thread."""
        with self._lock:
            template = self._compiled.get(grammar)
            if template is not None:
                self._compiled.move_to_end(grammar)
            else:
                template = self._compile(grammar)
                self._compiled[grammar] = template
                if len(self._compiled) > self._keep:
                    self._compiled.popitem(last=False)
            return Constraint(template.deep_copy(), description, self._tokenizer().vocab_size)

    def _compile(self, grammar: str) -> llguidance.LLMatcher:
        tokenizer = self._tokenizer()
        problem = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if problem:
            raise GrammarError(problem.strip())
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return matcher

    def _tokenizer(self) -> llguidance.LLTokenizer:
        if self._lltokenizer is None:
            n_vocab = len(self._hf_tokenizer)  # type: ignore[arg-type]
            self._lltokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab, self._eos or None)
        return self._lltokenizer
