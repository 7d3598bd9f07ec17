"""A model folder that ships code is refused unless the operator allows it, before anything runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streamchat.cli import _serve_parser, main, settings_from_args
from streamchat.engine.remote_code.shipped import refused_by_transformers, shipped_code
from tests.engine.remote_code.tiny_glm import write_tiny_glm


@pytest.fixture
def glm_folder(tmp_path: Path, glm_tokenizer) -> Path:
    return write_tiny_glm(tmp_path / "glm", glm_tokenizer, progress_file=tmp_path / "progress")


def test_the_code_a_folder_ships_is_read_from_its_auto_map(glm_folder: Path) -> None:
    code = shipped_code(str(glm_folder))
    assert code is not None
    assert code.classes["AutoModel"] == "modeling_tinyglm.TinyGLMForConditionalGeneration"
    assert code.files == ["configuration_tinyglm.py", "modeling_tinyglm.py"]


def test_a_tokenizer_of_its_own_counts_as_shipped_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    auto_map = {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map}))
    code = shipped_code(str(tmp_path))
    assert code is not None and code.files == ["tokenization_chatglm.py"]


def test_folders_without_code_and_files_are_not_remote_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert shipped_code(str(tmp_path)) is None
    assert shipped_code(None) is None  # the embedded GGUF


def test_serve_refuses_before_starting_naming_the_flag_and_the_files(
    glm_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", str(glm_folder)]) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code" in err and "modeling_tinyglm.py" in err
    assert not (tmp_path / "progress").exists()  # nothing of the folder ran


def test_the_flag_works_alone_or_with_a_value() -> None:
    parser = argparse.ArgumentParser()
    _serve_parser(parser.add_subparsers(dest="command"))
    for argv, expected in ((["serve"], False), (["serve", "--trust-remote-code"], True),
                           (["serve", "--trust-remote-code", "false"], False)):  # fmt: skip
        assert settings_from_args(parser.parse_args(argv)).trust_remote_code is expected


def test_transformers_refusing_a_hub_models_code_is_said_with_our_flag() -> None:
    exc = ValueError("The repository THUDM/chatglm-6b contains custom code ... pass `trust_remote_code=True`")
    refused = refused_by_transformers("THUDM/chatglm-6b", exc)
    assert refused is not None and "--trust-remote-code" in str(refused)
    assert refused_by_transformers("x", ValueError("something else")) is None
