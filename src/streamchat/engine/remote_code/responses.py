"""A stream of whole, growing responses (what stream_chat yields) as append-only text deltas.

stream_chat yields the whole answer so far at every step, decoded from all its tokens. Two
things keep that from being a plain "new suffix":

- a character spread over several tokens decodes to U+FFFD until its last byte arrives, so a
  response may end in U+FFFD that the next one replaces with the real character;
- the model's own clean-up may rewrite text already yielded, depending on what follows it:
  ChatGLM-6B's `process_response` turns "OK," into "OK，" once a Chinese character follows (which
  may take several yields, one byte-level token at a time), and strips trailing spaces, so a
  response can also shrink.

So a character is released only once another character follows it and two consecutive responses
agree on it (a trailing U+FFFD never counts): that absorbs both, at the cost of one character of
delay. A rewrite reaching further back cannot be taken back from the client: the text already
sent stands, the stream goes on from the new response at the same length (ChatGLM's rewrites
swap one character for one), and `rewritten` says it happened. At the end the last response is
released in full, without a trailing U+FFFD: bytes of a character the answer never finished are
not text.
"""

from __future__ import annotations

import os

_REPLACEMENT = "\ufffd"


class ResponseDeltas:
    def __init__(self) -> None:
        self.sent = ""  # what the client has been given
        self.rewritten = False  # a response changed text that had been sent
        self._last = ""  # the previous response, without trailing U+FFFD

    def update(self, response: str) -> str:
        """The text `response` settles beyond what was sent (possibly none yet)."""
        stable = response.rstrip(_REPLACEMENT)
        agreed = os.path.commonprefix([self._last, stable])
        self._last = stable
        return self._release(agreed[: len(stable) - 1], stable)  # the last character waits for the next

    def finish(self) -> str:
        """Whatever of the last response is still held back."""
        return self._release(self._last, self._last)

    def _release(self, settled: str, whole: str) -> str:
        if not whole.startswith(self.sent):  # the model changed text the client has
            self.rewritten = True
        delta = settled[len(self.sent) :]
        self.sent += delta
        return delta
