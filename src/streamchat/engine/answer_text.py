"""What the client sees of a sequence's tokens: text, and each token's logprobs beside its text.

Text goes through the detokenizer (never half a character) and the stop matcher (never a stop
string). A token's logprobs travel in the delta where the detokenizer releases its text, so joining
every token's `bytes` gives the answer's UTF-8, and a chunk's logprobs describe its content except
where a stop string might begin: text the stop matcher holds back until it is ruled out arrives a
chunk after its logprobs.
At the end, tokens whose bytes never became text (an unfinished character cut by the length
limit) are left out of the logprobs as they are of the text. A stop string is the one exception:
the text leaves it out, but the tokens that spelled it keep their logprobs (they were sampled).
"""

from __future__ import annotations

from streamchat.engine.contracts import Tokenizer
from streamchat.engine.detokenizer import IncrementalDetokenizer
from streamchat.engine.stops import StopMatcher
from streamchat.engine.types import TokenLogprob

Logprobs = tuple[TokenLogprob, ...]


class AnswerText:
    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stops: tuple[str, ...]) -> None:
        self._detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self._stops = StopMatcher(stops)
        self._held: list[TokenLogprob] = []

    @property
    def stopped(self) -> bool:
        """A stop string was found: the answer ends here."""
        return self._stops.stopped

    def add(self, token_id: int, logprobs: Logprobs = ()) -> tuple[str, Logprobs]:
        """The text `token_id` completes (possibly none yet) and the logprobs of the tokens behind it."""
        self._held.extend(logprobs)
        released = self._detok.add(token_id)
        if not released:
            return "", ()
        out, self._held = tuple(self._held), []
        return self._stops.feed(released), out

    def finish(self, logprobs: Logprobs = ()) -> tuple[str, Logprobs]:
        """Whatever is still held back, at the end of the answer."""
        self._held.extend(logprobs)
        tail = self._detok.finish()
        held, self._held = self._held, []
        text = self._stops.feed(tail)
        if not self._stops.stopped:
            text += self._stops.flush()
        return text, _within(held, len(tail.encode("utf-8", "surrogatepass")))


def _within(items: list[TokenLogprob], budget: int) -> Logprobs:
    """The leading tokens whose bytes fit in `budget` bytes of text; a token that straddles the
    end keeps the bytes that made it into the text."""
    kept: list[TokenLogprob] = []
    for item in items:
        if len(item.bytes) <= budget:
            kept.append(item)
            budget -= len(item.bytes)
        else:
            if budget > 0:
                kept.append(TokenLogprob(item.token, item.logprob, item.bytes[:budget], item.top))
            break
    return tuple(kept)
