"""Chat messages as ChatGLM's `stream_chat` takes them: one query and the history before it.

ChatGLM-6B and ChatGLM2 take history as `[(question, answer), …]` pairs and build their prompt
from it themselves; ChatGLM3 takes `[{"role", "content"}, …]` dicts and knows a system role.
For pairs, a conversation is read as its model would have produced it:

- consecutive user messages are one question (joined by a line break), and likewise answers;
- an answer with no question before it pairs with an empty question;
- system messages have no place in pairs: their text, joined, goes before the first question
  (of the history if there is one, else of the query), separated by a blank line;
- the last message must be the user's (stream_chat answers a question; it cannot continue an
  answer), and tool messages have no counterpart: both are refused, naming `messages`.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


class HistoryStyle(enum.Enum):
    PAIRS = "pairs"  # ChatGLM-6B, ChatGLM2: [(question, answer), …]
    MESSAGES = "messages"  # ChatGLM3: [{"role": …, "content": …}, …]


class ConversationError(ValueError):
    """A conversation stream_chat cannot be asked (the API answers 400 naming `messages`)."""


@dataclass(frozen=True)
class ChatTurn:
    query: str
    history: tuple[Any, ...]  # pairs or messages, per the model's style

    def history_for_call(self) -> list[Any]:
        """A fresh copy each call: ChatGLM3's stream_chat appends to the list it is given."""
        return [list(item) if isinstance(item, tuple) else copy.deepcopy(item) for item in self.history]


def to_turn(messages: Sequence[Message], style: HistoryStyle) -> ChatTurn:
    if not messages or messages[-1].get("role") != "user":
        raise ConversationError("the last message must be the user's: stream_chat answers a question")
    if any(m.get("role") not in ("system", "user", "assistant") for m in messages):
        raise ConversationError("this model takes system, user and assistant messages only")
    if style is HistoryStyle.MESSAGES:
        history = tuple({"role": m["role"], "content": _text(m)} for m in messages[:-1])
        return ChatTurn(_text(messages[-1]), history)
    return _pairs(messages)


def _pairs(messages: Sequence[Message]) -> ChatTurn:
    system = "\n".join(_text(m) for m in messages if m["role"] == "system")
    pairs: list[tuple[str, str]] = []
    questions: list[str] = []
    answers: list[str] = []
    for m in messages:
        if m["role"] == "user":
            if answers:  # a new round begins
                pairs.append(("\n".join(questions), "\n".join(answers)))
                questions, answers = [], []
            questions.append(_text(m))
        elif m["role"] == "assistant":
            answers.append(_text(m))
    query = "\n".join(questions)
    if system:
        if pairs:
            pairs[0] = (f"{system}\n\n{pairs[0][0]}", pairs[0][1])
        else:
            query = f"{system}\n\n{query}"
    return ChatTurn(query, tuple(pairs))


def _text(message: Message) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""
