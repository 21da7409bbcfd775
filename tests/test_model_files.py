"""Resolving --model: files, directories, split models, paths under models/."""

import pytest

from llamabridge.runtime.model_files import ModelFileNotFound, resolve_model_path


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_file_and_directory(tmp_path):
    f = touch(tmp_path / "m" / "model-Q4.gguf")
    assert resolve_model_path(f) == f
    assert resolve_model_path(tmp_path / "m") == f


def test_split_model_picks_first_shard(tmp_path):
    first = touch(tmp_path / "big" / "Q8" / "big-00001-of-00003.gguf")
    touch(tmp_path / "big" / "Q8" / "big-00002-of-00003.gguf")
    touch(tmp_path / "big" / "mmproj-big.gguf")
    assert resolve_model_path(tmp_path / "big") == first


def test_relative_to_models_dir(tmp_path):
    f = touch(tmp_path / "models" / "Qwen" / "Qwen3-GGUF" / "qwen3.gguf")
    assert resolve_model_path("Qwen/Qwen3-GGUF", models_dir=tmp_path / "models") == f


def test_not_found_says_what_was_searched(tmp_path):
    with pytest.raises(ModelFileNotFound) as info:
        resolve_model_path("org/missing", models_dir=tmp_path / "models")
    assert "org/missing" in info.value.message and "llamabridge hfd" in info.value.message
    assert str(tmp_path / "models") in info.value.message


def test_ambiguous_directory(tmp_path):
    touch(tmp_path / "d" / "a.gguf")
    touch(tmp_path / "d" / "b.gguf")
    with pytest.raises(ModelFileNotFound, match="several models"):
        resolve_model_path(tmp_path / "d")
