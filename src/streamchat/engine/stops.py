"""Stop strings honoured across token boundaries.

A stop string may arrive split over several deltas ("<|" then "end|>"). Text that could still be
the start of a stop string is held back until it is either completed (then it and everything after
it are dropped) or ruled out (then it is released), so a stop string never reaches the client.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the part of `text` (plus held-back text) that is safe to emit."""
        if not self._stops:
            return text
        buf = self._pending + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buf[:cut]
        hold = max((self._partial_suffix(buf, s) for s in self._stops), default=0)
        self._pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        """At the end of generation, held-back text is ordinary text."""
        text, self._pending = self._pending, ""
        return text

    @staticmethod
    def _partial_suffix(buf: str, stop: str) -> int:
        for k in range(min(len(stop) - 1, len(buf)), 0, -1):
            if buf.endswith(stop[:k]):
                return k
        return 0
