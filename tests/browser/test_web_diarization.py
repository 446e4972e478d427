"""The upload page with "Speakers" ticked: a three-speaker conversation of real clips shows a speaker
column with one colour per speaker, and the SRT download carries the speakers."""

from __future__ import annotations

import re

import pytest

from benchmarks import conversations
from client.audio import encode_wav
from tests.integration.test_diarization import SEQUENCE, TINY, _truth_at

pytestmark = [pytest.mark.browser, pytest.mark.integration]  # also set by folder (tests/conftest.py)


def test_speaker_column_and_colours(web_gateway, page, shared_audio, tmp_path):
    conversation = conversations.from_clips(SEQUENCE, audio_dir=shared_audio)
    path = tmp_path / "talk.wav"
    path.write_bytes(encode_wav(conversation.audio))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(web_gateway + "/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#speaker-col").is_hidden()
    page.set_input_files("#file", str(path))
    page.select_option("#model", TINY)
    page.check("#diarize")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=180_000)

    assert page.locator("#speaker-col").is_visible()
    rows = page.locator("#segments tbody tr")
    seen: dict[str, str] = {}
    for i in range(rows.count()):
        start = rows.nth(i).locator("td.time").first.inner_text()
        cell = rows.nth(i).locator("td.speaker")
        label, colour = cell.inner_text(), cell.evaluate("c => getComputedStyle(c).color")
        assert seen.setdefault(label, colour) == colour  # one colour per speaker
        h, m, s = start.split(":")
        truth = _truth_at(conversation, int(h) * 3600 + int(m) * 60 + float(s) + 0.5)
        assert {"Speaker A": "ls1089", "Speaker B": "ls1221", "Speaker C": "ls260"}[label] == truth
    assert sorted(seen) == ["Speaker A", "Speaker B", "Speaker C"]
    assert len(set(seen.values())) == 3  # and a different colour for each

    with page.expect_download() as info:
        page.click("#dl-srt")
    srt = open(info.value.path(), encoding="utf-8").read()
    assert sorted(set(re.findall(r"^(Speaker [A-Z]): ", srt, re.M))) == ["Speaker A", "Speaker B", "Speaker C"]
    assert not errors, errors
