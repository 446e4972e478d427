"""The upload page in headless Chromium: upload a real recording, read the words, download the SRT."""

from __future__ import annotations

import re

import pytest

from tests.utils.helpers import clip, wer
from tests.integration.test_gateway_openai import parse_srt, parse_vtt

pytestmark = [pytest.mark.browser, pytest.mark.integration]  # also set by folder (tests/conftest.py)

JFK = "en/jfk.flac"


def test_page_needs_no_cdn(web_gateway, page):
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(web_gateway) else None)
    page.goto(web_gateway + "/")
    page.wait_for_load_state("networkidle")
    assert page.title() == "Whisper speech-to-text"
    assert not external, external
    # the model list came from /v1/models
    assert "whisper-tiny-en" in page.locator("#model").inner_text()


def test_upload_shows_words_and_downloads_srt(web_gateway, page, shared_audio):
    row = clip(JFK)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(web_gateway + "/")
    page.wait_for_load_state("networkidle")
    page.set_input_files("#file", str(row["path"]))
    page.select_option("#model", "whisper-tiny-en")
    page.select_option("#language", "en")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)

    text = page.inner_text("#text")
    assert wer(row["reference_text"], text) <= 0.15, text
    assert re.search(r"ask not what your country can do for you", text, re.I), text
    cells = page.locator("#segments tbody td.time").all_inner_texts()
    assert cells and all(re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3}", c) for c in cells), cells
    assert page.inner_text("#status") == "Done"

    with page.expect_download() as info:
        page.click("#dl-srt")
    download = info.value
    assert download.suggested_filename == "jfk.srt"
    cues = parse_srt(open(download.path(), encoding="utf-8").read())
    assert wer(row["reference_text"], " ".join(c[2] for c in cues)) <= 0.15
    assert cues[-1][1] <= row["duration_seconds"] + 0.5

    with page.expect_download() as info:
        page.click("#dl-vtt")
    cues = parse_vtt(open(info.value.path(), encoding="utf-8").read())
    assert wer(row["reference_text"], " ".join(c[2] for c in cues)) <= 0.15
    assert not errors, errors


def test_bad_file_shows_the_error(web_gateway, page, tmp_path):
    bogus = tmp_path / "notes.mp3"
    bogus.write_text("this is a text file, not audio\n" * 20)
    page.goto(web_gateway + "/")
    page.set_input_files("#file", str(bogus))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "415" in page.inner_text("#error")
