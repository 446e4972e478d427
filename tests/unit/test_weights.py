"""Model resolution and bundled-weights verification (no model load)."""

from __future__ import annotations

import pytest

from whisper_triton import weights


def test_hub_names_pass_through(tmp_path):
    assert weights.resolve("large-v3", tmp_path) == "large-v3"
    assert weights.resolve("Systran/faster-whisper-small", tmp_path) == "Systran/faster-whisper-small"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(weights.ModelError, match="does not exist"):
        weights.resolve("./no-such-model", tmp_path)


def test_directory_without_weights_is_rejected(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(weights.ModelError, match="model.bin missing"):
        weights.resolve("m", tmp_path)


def test_unknown_bundled_model(tmp_path):
    with pytest.raises(weights.ModelError, match="unknown bundled model"):
        weights.resolve("bundled:huge", tmp_path)


def test_corrupt_bundled_model_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_TRITON_CACHE", str(tmp_path))
    target = tmp_path / "tiny.en"
    target.mkdir()
    (target / "model.bin").write_bytes(b"not a model")
    (target / "config.json").write_text("{}")
    (target / "tokenizer.json").write_text("{}")
    with pytest.raises(weights.ModelError, match="corrupt.*sha256"):
        weights.resolve("bundled:tiny.en")


def test_provision_assembles_and_verifies(tmp_path):
    path = weights.provision("tiny.en", tmp_path)
    assert weights.sha256_of(path / "model.bin") == weights.BUNDLED["tiny.en"].sha256
    assert (path / "tokenizer.json").is_file()
    assert not list(path.glob(".model.bin.*"))  # no temporary left behind
