"""A missing or corrupt model fails at start-up with a clear message, not at the first request."""

from __future__ import annotations

import shutil

import pytest

from tests.utils.helpers import ROOT, free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("model_param,expected", [
    ("./no-such-model", "does not exist"),
    ("bundled:huge", "unknown bundled model"),
])
def test_bad_model_fails_at_startup(tmp_path, model_param, expected):
    from launcher.triton import TritonServer

    repo = tmp_path / "repo"
    model_dir = repo / "broken"
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(ROOT / "model_repository/whisper/1/model.py", model_dir / "1/model.py")
    config = (ROOT / "model_repository/whisper-tiny-en/config.pbtxt").read_text()
    config = config.replace('name: "whisper-tiny-en"', 'name: "broken"').replace('"bundled:tiny.en"', f'"{model_param}"')
    config = config[: config.index("model_warmup")] + config[config.index("parameters ["):]
    (model_dir / "config.pbtxt").write_text(config)
    server = TritonServer(repo, free_port(), free_port(), free_port(), models=["broken"], log_path=tmp_path / "log")
    server.start()
    try:
        with pytest.raises(RuntimeError) as info:
            server.wait_ready(timeout=120)
    finally:
        server.stop()
    assert expected in str(info.value)
