"""The tokenizer the HTTP layer holds for a stream_chat model: token counts that are true, and a
way back from a prompt's ids to the conversation they came from.

Why this shape: the HTTP layer renders chat messages into prompt token ids (`chat/prompt.py`'s
`render`, through `apply_chat_template`) and checks them against the context window, the prompt
ceiling and the answer budget before it builds a `GenerationRequest` of ids. stream_chat wants
the conversation itself (a query and its history), and builds its prompt on its own. Rather than
teach every protocol a second path, `apply_chat_template` here returns the ids of the prompt the
model will build (ChatGLM's own format, through the model tokenizer's `build_chat_input` or
`build_prompt` when it has them), so every check and the usage count stay true, and remembers
which conversation each rendering came from. The engine maps the ids back (`turn_for`), on the
event loop, in the same synchronous stretch of the route that rendered them, so a small memory
of recent renderings is enough. Ids that were never rendered here (a `/v1/completions` prompt)
are decoded and asked as one question without history.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from streamchat.engine.async_engine import RequestNotSupportedError
from streamchat.engine.remote_code.conversation import ChatTurn, ConversationError, HistoryStyle, Message, to_turn

_REMEMBERED = 256  # renderings kept: a route maps its ids back before the next request's await


def chatglm_prompt(turn: ChatTurn) -> str:
    """ChatGLM-6B's prompt: the query alone, or every round numbered from 0."""
    if not turn.history:
        return turn.query
    rounds = "".join(f"[Round {i}]\n问：{q}\n答：{a}\n" for i, (q, a) in enumerate(turn.history))
    return f"{rounds}[Round {len(turn.history)}]\n问：{turn.query}\n答："


def prompt_ids(tokenizer: Any, turn: ChatTurn, style: HistoryStyle) -> list[int]:
    """The ids of the prompt the model builds for `turn`, as its own code builds it."""
    if style is HistoryStyle.MESSAGES and hasattr(tokenizer, "build_chat_input"):  # ChatGLM3
        ids = tokenizer.build_chat_input(turn.query, history=turn.history_for_call(), role="user")["input_ids"]
        return [int(t) for t in ids[0]]
    if hasattr(tokenizer, "build_prompt"):  # ChatGLM2
        text = tokenizer.build_prompt(turn.query, turn.history_for_call())
    elif style is HistoryStyle.MESSAGES:
        text = "".join(f"<|{m['role']}|>\n{m['content']}" for m in turn.history) + f"<|user|>\n{turn.query}"
    else:
        text = chatglm_prompt(turn)
    return [int(t) for t in tokenizer([text])["input_ids"][0]]


class TurnTokenizer:
    """The model's tokenizer, whose chat template renders a conversation for stream_chat."""

    chat_template = "stream_chat: query and history"  # render() goes through apply_chat_template

    def __init__(self, tokenizer: Any, style: HistoryStyle) -> None:
        self.tokenizer = tokenizer
        self.style = style
        self._rendered: OrderedDict[tuple[int, ...], ChatTurn | ConversationError] = OrderedDict()

    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> dict[str, list[int]]:
        """`{"input_ids": …}` of the prompt the model will build; what render() asks for."""
        try:
            if kwargs.get("tools"):
                raise ConversationError("this model's stream_chat takes no tools")
            rendered: ChatTurn | ConversationError = to_turn(conversation, self.style)
            ids = prompt_ids(self.tokenizer, rendered, self.style)
        except ConversationError as exc:  # refused when the request reaches the engine, with a 400
            rendered = exc
            ids = self.tokenizer.encode("\n".join(str(m.get("content") or "") for m in conversation))
        key = tuple(ids)
        self._rendered[key] = rendered
        self._rendered.move_to_end(key)
        while len(self._rendered) > _REMEMBERED:
            self._rendered.popitem(last=False)
        return {"input_ids": list(ids)}

    def turn_for(self, ids: list[int]) -> ChatTurn:
        """The conversation `ids` were rendered from; RequestNotSupportedError if it cannot be asked."""
        rendered = self._rendered.get(tuple(ids))
        if rendered is None:
            return ChatTurn(self.tokenizer.decode(ids, skip_special_tokens=True), ())
        if isinstance(rendered, ConversationError):
            raise RequestNotSupportedError(str(rendered), "messages")
        return rendered

    # the rest of the tokenizer interface the HTTP layer and the engine use
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return len(self.tokenizer)
