"""`engine/model_files.py`: reading a GGUF's metadata without decoding its vocabulary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamchat.engine.model_files import embedded_gguf, gguf_metadata, transformers_reads_gguf


def test_scalars_and_strings_are_read_and_arrays_skipped(tmp_path: Path) -> None:
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    path = tmp_path / "kinds.gguf"
    writer = GGUFWriter(str(path), "glm4")
    writer.add_array("tokenizer.ggml.tokens", ["<|endoftext|>", "你好", ""])  # before the scalars: skipped right
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_uint32("glm4.context_length", 131072)
    writer.add_float32("general.sampling.temp", 0.8)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_int64("test.i64", -5)
    writer.add_float64("test.f64", 0.25)
    writer.add_uint8("test.u8", 7)
    writer.add_string("tokenizer.ggml.pre", "glm4")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    found = gguf_metadata(path)
    expected = {
        key: field.contents()
        for key, field in GGUFReader(str(path)).fields.items()
        if field.types and field.types[0] != GGUFValueType.ARRAY and not key.startswith("GGUF.")
    }
    assert found == pytest.approx(expected)
    assert found["general.architecture"] == "glm4" and found["tokenizer.ggml.pre"] == "glm4"
    assert found["general.sampling.temp"] == 0.8  # the float32 shown as written, not 0.800000011920929
    assert "tokenizer.ggml.tokens" not in found and "test.nested" not in found


def test_the_embedded_gguf_is_read_in_well_under_a_second() -> None:
    started = time.monotonic()
    metadata = gguf_metadata(embedded_gguf())
    assert time.monotonic() - started < 1.0  # gguf's GGUFReader takes seconds over its 49k tokens
    assert metadata["general.architecture"] == "llama"


def test_transformers_reads_llama_ggufs_but_not_glms() -> None:
    assert transformers_reads_gguf("llama")
    assert not transformers_reads_gguf("glm4")
    assert not transformers_reads_gguf("chatglm")
