"""``/live`` in headless Chromium: a fake microphone fed from real speech; the page speaks ``/v1/realtime``
(OpenAI's Realtime protocol, server VAD) and shows each transcribed turn."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from tests.utils.helpers import audio_of
from tests.streaming_gateway import stream_gateway

pytestmark = [pytest.mark.browser, pytest.mark.integration]  # also set by folder (tests/conftest.py)

CHROMIUM = "/usr/bin/chromium"


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    """16-bit mono PCM wav (what Chromium's fake capture device reads)."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def live_url(triton, tmp_path_factory):
    with stream_gateway(triton.grpc_url, tmp_path_factory.mktemp("live-gateway")) as url:
        yield url + "/live"


def test_live_page_shows_words_from_fake_microphone(live_url, tmp_path, shared_audio):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # JFK then 2 s of silence; the fake device loops the file.
    audio = np.concatenate([audio_of("en/jfk.flac"), np.zeros(32000, dtype=np.float32)])
    wav = write_wav(tmp_path / "jfk.wav", audio)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(live_url)
            page.select_option("#language", "en")
            page.click("#start")
            # Each turn is transcribed whole once the speaker pauses; JFK pauses after "country".
            page.wait_for_function(
                "document.getElementById('committed').textContent.toLowerCase().includes('country')",
                timeout=60_000)
            assert sockets and all("/v1/realtime?intent=transcription" in url for url in sockets), sockets
            committed = words_of(page.inner_text("#committed"))
            assert {"fellow", "not", "country"} <= committed, committed
            assert page.locator("#committed .turn").count() >= 2  # one span per committed turn
            assert "latency" in page.inner_text("#latency")
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=30_000)
            wanted = {"and", "so", "my", "fellow", "americans", "ask", "not", "what", "your", "country", "can", "do",
                      "for", "you"}
            final = words_of(page.inner_text("#committed"))
            assert wanted <= final, (wanted - final, final)
            assert page.eval_on_selector("#committed", "e => getComputedStyle(e).color") == "rgb(0, 0, 0)"
            assert page.eval_on_selector("#tentative", "e => getComputedStyle(e).color") != "rgb(0, 0, 0)"
            assert not errors, errors
            assert not page.inner_text("#error"), page.inner_text("#error")
        finally:
            browser.close()
