"""Chat messages become ChatGLM's query and history; what cannot be asked is refused, named."""

from __future__ import annotations

import pytest

from streamchat.engine.remote_code.conversation import ChatTurn, ConversationError, HistoryStyle, to_turn

PAIRS, MESSAGES = HistoryStyle.PAIRS, HistoryStyle.MESSAGES


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def test_rounds_become_pairs_and_the_last_question_the_query() -> None:
    turn = to_turn([user("你好"), assistant("嗨"), user("再见")], PAIRS)
    assert turn == ChatTurn("再见", (("你好", "嗨"),))


def test_the_system_prompt_goes_before_the_first_question_of_the_history() -> None:
    turn = to_turn([system("简短回答。"), user("a"), assistant("b"), user("c")], PAIRS)
    assert turn == ChatTurn("c", (("简短回答。\n\na", "b"),))


def test_without_history_the_system_prompt_goes_before_the_query() -> None:
    assert to_turn([system("S1"), system("S2"), user("q")], PAIRS) == ChatTurn("S1\nS2\n\nq", ())


def test_consecutive_messages_of_one_side_are_joined_and_a_lone_answer_pairs_with_an_empty_question() -> None:
    turn = to_turn([assistant("欢迎"), user("a"), user("b"), assistant("c"), assistant("d"), user("e")], PAIRS)
    assert turn == ChatTurn("e", (("", "欢迎"), ("a\nb", "c\nd")))


def test_chatglm3_style_keeps_every_message_with_its_role() -> None:
    turn = to_turn([system("S"), user("a"), assistant("b"), user("c")], MESSAGES)
    assert turn.query == "c"
    assert turn.history == (
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    )
    copy = turn.history_for_call()
    copy.append({"role": "user", "content": "c"})  # ChatGLM3's stream_chat appends to what it is given
    assert len(turn.history) == 3


@pytest.mark.parametrize(
    "messages",
    [
        [user("a"), assistant("b")],  # nothing to answer: stream_chat cannot continue an answer
        [user("a"), {"role": "tool", "content": "42"}, user("b")],
        [],
    ],
)
def test_what_stream_chat_cannot_be_asked_is_refused(messages: list[dict]) -> None:
    with pytest.raises(ConversationError):
        to_turn(messages, PAIRS)
