"""The HTTP layer's tokenizer for a stream_chat model: true prompt counts, and the way back to the
conversation a prompt's ids were rendered from."""

from __future__ import annotations

import pytest

from streamchat.chat.prompt import fit_history, render
from streamchat.engine.async_engine import RequestNotSupportedError
from streamchat.engine.remote_code.conversation import ChatTurn, HistoryStyle
from streamchat.engine.remote_code.prompts import TurnTokenizer, chatglm_prompt


@pytest.fixture
def prompts(glm_tokenizer) -> TurnTokenizer:
    return TurnTokenizer(glm_tokenizer, HistoryStyle.PAIRS)


def test_chatglm_6b_prompt_is_built_as_its_own_code_builds_it() -> None:
    assert chatglm_prompt(ChatTurn("你好", ())) == "你好"
    assert chatglm_prompt(ChatTurn("c", (("a", "b"),))) == "[Round 0]\n问：a\n答：b\n[Round 1]\n问：c\n答："


def test_rendered_ids_count_the_prompt_the_model_builds_and_map_back(prompts: TurnTokenizer, glm_tokenizer) -> None:
    messages = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "嗨"},
        {"role": "user", "content": "再见"},
    ]
    ids = render(prompts, messages)
    turn = ChatTurn("再见", (("你好", "嗨"),))
    assert ids == glm_tokenizer([chatglm_prompt(turn)])["input_ids"][0]
    assert prompts.turn_for(ids) == turn


def test_history_fitting_works_on_the_seed_routes(prompts: TurnTokenizer) -> None:
    history = [["第一个问题" * 20, "第一个回答" * 20], ["q2", "a2"]]
    fitted = fit_history(prompts, history, "q3", context=120, reserved=20)
    assert fitted.rounds_kept == 1
    assert prompts.turn_for(fitted.token_ids) == ChatTurn("q3", (("q2", "a2"),))


def test_ids_never_rendered_here_are_asked_as_one_question(prompts: TurnTokenizer, glm_tokenizer) -> None:
    ids = glm_tokenizer.encode("Once upon a time")
    assert prompts.turn_for(ids) == ChatTurn("Once upon a time", ())


def test_a_conversation_that_cannot_be_asked_is_refused_when_submitted(prompts: TurnTokenizer) -> None:
    ids = render(prompts, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(RequestNotSupportedError) as info:
        prompts.turn_for(ids)
    assert info.value.param == "messages"
