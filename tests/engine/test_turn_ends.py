"""`engine/turn_ends.py`: the ids an answer ends on, whatever the files list."""

from __future__ import annotations

from types import SimpleNamespace

from streamchat.engine.turn_ends import listed_eos_ids, turn_end_ids


class Vocab:
    def __init__(self, *tokens: str) -> None:
        self._vocab = {t: i for i, t in enumerate(tokens)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)


def test_every_listed_eos_id_counts_whether_one_or_a_list() -> None:
    glm4 = SimpleNamespace(eos_token_id=[151329, 151336, 151338])  # GLM-4's generation_config.json
    tokenizer = SimpleNamespace(eos_token_id=151329)
    assert listed_eos_ids(glm4, tokenizer, None, SimpleNamespace(eos_token_id=None)) == {151329, 151336, 151338}
    assert listed_eos_ids(SimpleNamespace(eos_token_id=(2, 3))) == {2, 3}


def test_a_glm_vocabulary_ends_on_the_turn_tokens_it_holds() -> None:
    glm = Vocab("<|endoftext|>", "[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|observation|>")
    assert turn_end_ids(glm) == {0, 3, 5}
    chatglm_without_observation = Vocab("<eos>", "[gMASK]", "<|user|>")
    assert turn_end_ids(chatglm_without_observation) == {2}


def test_other_vocabularies_keep_their_own_eos_only() -> None:
    """`<|endoftext|>` and `<|user|>` may be ordinary tokens elsewhere: only a GLM vocabulary stops on them."""
    assert turn_end_ids(Vocab("<|endoftext|>", "<|user|>", "<|observation|>")) == set()
    assert turn_end_ids(object()) == set()
