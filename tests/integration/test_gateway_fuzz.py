"""Hostile input against the live gateway (real Triton behind it): no upload may get a 5xx.

A Hypothesis fuzzer mutates one short clip in six containers (wav, flac, mp3, ogg/opus, webm/opus,
mp4/aac): truncations, byte flips, zeroed runs, valid headers with garbage bodies, random bytes,
spliced files; with wrong filenames and content types, and hostile form fields (unicode, path
traversal, NUL, bidi marks and over-long model names; bad languages, formats, temperatures,
granularities, beam sizes), on the OpenAI and the legacy upload routes. Every answer must be a 200
or a 4xx with the OpenAI error body (legacy routes: ``success: false`` beside it), error messages may
not carry control or bidi characters, and the gateway process must stay up with its peak RSS growth
bounded. The run is derandomised and of fixed size (``FUZZ_EXAMPLES`` cases per route group), so it
takes the same time and finds the same things on every run; the summary line gives the cases tried,
the statuses seen and the number of 5xx (``pytest -rP`` shows it; ``FUZZ_LOG=path`` also appends every
case and its answer to a file).

Explicit cases beside it: huge and numerous headers (431), a 10-hour silent file (refused from its
header, at the default limit too), a decompression bomb (64 KB of FLAC that says nothing of its
length and decodes to 10 hours: decoding stops at the limit), a 1 Hz WAV (one packet would resample
to gigabytes) and hostile model names (404 ``model_not_found`` before Triton sees them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.utils.fuzz_gateway import CONTAINERS, alive, corpus, load_clip, memory_mb, silent_flac, wav_header
from tests.utils.helpers import SHARED_AUDIO
from tests.integration.conftest import run_gateway

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 150))  # per fuzz test; two of them
FUZZ_MAX_AUDIO_SECONDS = 600  # the fuzz gateway's limit: a bomb costs at most 38 MB of float32
RSS_GROWTH_LIMIT_MB = 600  # 10 h at 16 kHz float32 would be 2.3 GB
OPENAI_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
LEGACY_ROUTES = ("/transcribe/file", "/stt/transcribe/", "/transcribe/binary")
LEGACY_PREFIXES = ("/transcribe/", "/stt/", "/models")
BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}

HOSTILE_NAMES = [
    "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "..\\..\\windows\\win.ini",
    "/etc/passwd", "whisper/../whisper-tiny-en", "whisper\x00", "whisper\x00../../etc/passwd", "\x00",
    "whisper\r\nX-Injected: 1", "\u202ewhisper", "whisper\u200f", "ｗｈｉｓｐｅｒ", "whisper\u0301", "😀",
    "w" * 129, "w" * 10_000, ".", "..", "-whisper", "whisper;rm -rf /", "${jndi:ldap://x/a}", "<script>",
    "whisper%00", "CON", "whisper-tiny-en/", "whisper\t",
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # surrogates cannot be sent
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def _one(values: list, extra: st.SearchStrategy | None = None) -> st.SearchStrategy:
    choices = st.sampled_from(values)
    return choices if extra is None else st.one_of(choices, extra)


@st.composite
def models(draw) -> str | None:
    pick = draw(st.integers(0, 9))
    if pick < 5:  # most uploads that decode go to the small model: inference is the slow part
        return "whisper-tiny-en"
    if pick == 5:
        return draw(st.sampled_from([None, "", "whisper-1", " whisper-tiny-en ", "whisper"]))
    if pick < 9:
        return draw(st.sampled_from(HOSTILE_NAMES))
    return draw(TEXT)


FIELDS = {
    "language": _one([None, "en", "EN", "english", "zh-CN", "auto", "", "xx", "e", "x" * 300, "../en", "en\x00",
                      "\u202een", "日本語", "haitian creole"], TEXT),
    "response_format": _one([None, "json", "text", "srt", "vtt", "verbose_json", "JSON", "docx", ""], TEXT),
    "temperature": _one([None, "0", "0.2", "1", "1.5", "-1", "nan", "inf", "-inf", "1e309", "0x10", ""], ASCII),
    "timestamp_granularities[]": _one([None, "word", "segment", "words", ""], TEXT),
    "stream": _one([None, "true", "false", "1", "yes", "maybe"]),
    "chinese_script": _one([None, "s2twp", "t2s", "none", "simplified", "klingon", "\x00"], TEXT),
    "beam_size": _one([None, "0", "1", "5", "16", "17", "-1", "99999999999999999999999", "1.5"], ASCII),
    "prompt": _one([None, "", "Hello.", "\x00" * 10, "\u202e" * 50], st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)),
    "timestamps": _one([None, "true", "false", "2"]),
    "ext": _one([None, "wav", "mp3", "../../x", "\x00"], TEXT),
}
VALID_FIELDS = {
    "language": st.sampled_from(["en", "english", "EN", "auto", "", "en-US"]),
    "response_format": st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"]),
    "temperature": st.sampled_from(["0", "0.0", "0.4", "1"]),
    "timestamp_granularities[]": st.sampled_from(["word", "segment"]),
    "stream": st.sampled_from(["true", "false"]),
    "chinese_script": st.sampled_from(["s2twp", "t2s", "none", "simplified"]),
    "beam_size": st.sampled_from(["0", "1", "2"]),
    "prompt": st.sampled_from(["", "Hello.", "Americans, ask not."]),
    "timestamps": st.sampled_from(["true", "false"]),
    "ext": st.sampled_from(["wav", "mp3", "flac"]),
}
FILENAMES = ["clip{suffix}", "clip.txt", "clip", "../../etc/passwd", "..\\..\\clip{suffix}", "名前{suffix}",
             "\u202egpj{suffix}", "a\x00b{suffix}", "x" * 1000 + "{suffix}", "clip{suffix}.exe", ".{suffix}"]
CONTENT_TYPES = ["audio/wav", "audio/mpeg", "application/octet-stream", "text/plain", "image/png", "video/mp4",
                 "multipart/form-data", "audio/ogg; codecs=opus", "", "application/json"]


@st.composite
def payloads(draw, files: dict[str, bytes]) -> tuple[str, str, bytes]:
    """(container, mutation, bytes): a mutation of one corpus file."""
    name = draw(st.sampled_from(sorted(files)))
    data = files[name]
    kind = draw(st.sampled_from(["intact", "truncate", "header_garbage", "flip", "random", "tail", "zeros",
                                 "splice", "repeat"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "header_garbage":  # a valid header, then noise
        cut = draw(st.integers(4, 512))
        data = data[:cut] + draw(st.binary(min_size=0, max_size=4096))
    elif kind == "flip":
        buffer = bytearray(data)
        for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                             min_size=1, max_size=32)):
            buffer[position] = value
        data = bytes(buffer)
    elif kind == "random":
        data = draw(st.binary(max_size=4096))
    elif kind == "tail":  # no header
        data = data[draw(st.integers(1, len(data) - 1)):]
    elif kind == "zeros":
        start = draw(st.integers(0, len(data) - 1))
        data = data[:start] + bytes(draw(st.integers(1, 4096))) + data[start + 4096:]
    elif kind == "splice":  # the head of one container on the body of another
        other = files[draw(st.sampled_from(sorted(files)))]
        data = data[: draw(st.integers(0, 1024))] + other[draw(st.integers(0, len(other) - 1)):]
    elif kind == "repeat":
        data = data * draw(st.integers(2, 3))
    return name, kind, data


@st.composite
def upload_cases(draw, files: dict[str, bytes], routes: tuple[str, ...]) -> dict:
    route = draw(st.sampled_from(routes))
    container, mutation, data = draw(payloads(files))
    suffix = CONTAINERS[container][3]
    fields = {"model": draw(models())}
    hostile = draw(st.integers(0, 9)) < 4  # else only valid field values, so most cases reach the decoder
    for key, strategy in (FIELDS if hostile else VALID_FIELDS).items():
        if draw(st.integers(0, 3)) == 0:
            fields[key] = draw(strategy)
    fields = {k: v for k, v in fields.items() if v is not None}
    return {
        "route": route,
        "container": container,
        "mutation": mutation,
        "data": data,
        "filename": draw(st.sampled_from(FILENAMES)).format(suffix=suffix),
        "content_type": draw(st.one_of(st.sampled_from(CONTENT_TYPES), ASCII)),
        "shape": draw(st.sampled_from(["file"] * 12 + ["no_file", "file_as_text", "two_files", "other_name"])),
        "fields": fields,
    }


def _describe(case: dict) -> str:
    shown = {k: v for k, v in case.items() if k != "data"}
    return f"{json.dumps(shown, ensure_ascii=True)[:600]} ({len(case['data'])} bytes)"


def send(client: httpx.Client, case: dict) -> httpx.Response:
    route, data, fields = case["route"], case["data"], case["fields"]
    if route == "/transcribe/binary":
        headers = {"Content-Type": case["content_type"]} if case["content_type"] else {}
        return client.post(route, content=data, params=fields, headers=headers)
    file_part = (case["filename"], data, case["content_type"] or None)
    shape = case["shape"]
    if shape == "no_file":
        return client.post(route, data=fields)
    if shape == "file_as_text":
        return client.post(route, data={**fields, "file": data[:64].decode("latin-1")})
    files = {"file": file_part} if shape == "file" else {"audio": file_part} if shape == "other_name" else \
        [("file", file_part), ("file", file_part)]
    return client.post(route, data=fields, files=files)


def problems(route: str, response: httpx.Response) -> list[str]:
    """What is wrong with an answer: a 5xx, a status outside 200/4xx, or an error body of the wrong shape."""
    status = response.status_code
    if status >= 500:
        return [f"{status}: {response.text[:300]}"]
    if status == 200:
        return []
    if not 400 <= status < 500:
        return [f"unexpected status {status}"]
    try:
        body = response.json()
    except ValueError:
        return [f"{status} without a JSON body: {response.text[:200]!r}"]
    found = []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        found.append(f"{status} without the OpenAI error body: {body}")
    elif not isinstance(error["message"], str) or not error["message"]:
        found.append(f"{status} with an empty message: {body}")
    else:
        unsafe = [c for c in error["message"] if unicodedata.category(c) == "Cc" or c in BIDI]
        if unsafe:
            found.append(f"{status} message echoes control/bidi characters {unsafe[:5]!r}: {error['message'][:200]!r}")
    if route.startswith(LEGACY_PREFIXES) and isinstance(body, dict) and body.get("success") is not False:
        found.append(f"{status} on a legacy route without success: false: {body}")
    return found


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.started = time.perf_counter()

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        return (f"fuzz[{self.name}]: {self.cases} cases in {time.perf_counter() - self.started:.1f} s, "
                f"{self.server_errors} 5xx, {len(self.failures)} failures, statuses {dict(sorted(self.statuses.items()))}")


# -- fixtures ------------------------------------------------------------------------------------------


def _speech(directory: Path) -> np.ndarray:
    """Three seconds of speech: JFK from ../shared, else espeak-ng, else a chirp (fuzzing needs no words)."""
    jfk = SHARED_AUDIO / "en" / "jfk.flac"
    if jfk.is_file():
        return load_clip(jfk, 3.0)
    if shutil.which("espeak-ng"):
        path = directory / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "Hello world, this is a test."], check=True)
        return load_clip(path, 3.0)
    t = np.arange(3 * 16000) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)


class Corpus(dict):
    def __repr__(self) -> str:  # Hypothesis shows the strategy's arguments: not the bytes of every file
        return f"<corpus: {', '.join(f'{k} {len(v)} B' for k, v in self.items())}>"


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("fuzz-corpus")
    return Corpus(corpus(_speech(directory), directory))


@pytest.fixture(scope="module")
def fuzz_gateway(triton, tmp_path_factory) -> Iterator[str]:
    """A gateway of its own (default settings but a 600 s audio limit), so its memory is the fuzzer's alone."""
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway-fuzz"),
                     GATEWAY_MAX_AUDIO_SECONDS=str(FUZZ_MAX_AUDIO_SECONDS)) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_client(fuzz_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_gateway, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def fuzz_memory(fuzz_gateway, fuzz_client, fuzz_files) -> Iterator[dict]:
    """The fuzz gateway's pid and memory after one real transcription (models and imports warm)."""
    pid = fuzz_gateway.pid  # the process the fixture started
    r = fuzz_client.post(OPENAI_ROUTES[0], files={"file": ("clip.wav", fuzz_files["wav"])},
                         data={"model": "whisper-tiny-en"})
    assert r.status_code == 200, r.text
    state = {"pid": pid, "before": memory_mb(pid)}
    yield state
    after = memory_mb(pid)
    growth = after["VmHWM"] - state["before"]["VmHWM"]
    print(f"\nfuzz gateway memory: peak RSS {state['before']['VmHWM']:.0f} MB before, {after['VmHWM']:.0f} MB after "
          f"(growth {growth:.0f} MB, limit {RSS_GROWTH_LIMIT_MB}); RSS now {after['VmRSS']:.0f} MB")


def _fuzz(client: httpx.Client, memory: dict, tally: Tally, strategy: st.SearchStrategy) -> None:
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=False,
              phases=(Phase.explicit, Phase.generate),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                     HealthCheck.filter_too_much])
    @given(case=strategy)
    def run(case: dict) -> None:
        try:
            try:
                response = send(client, case)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # once: the server closes its connection after a 500 (already counted)
                response = send(client, case)
        except httpx.HTTPError as exc:  # a dropped connection or a hang: the gateway must answer
            tally.failures.append(f"no answer ({exc!r}) for {_describe(case)}")
            assert alive(memory["pid"]), f"the gateway died on {_describe(case)}"
            return
        tally.statuses[response.status_code] += 1
        if os.environ.get("FUZZ_LOG"):
            with open(os.environ["FUZZ_LOG"], "a") as fh:
                fh.write(f"{response.status_code} {_describe(case)} {response.text[:150]!r}\n")
        tally.failures.extend(f"{p} for {_describe(case)}" for p in problems(case["route"], response))

    run()
    print(f"\n{tally.summary()}")
    if not alive(memory["pid"]):
        tally.failures.append("the gateway process died")
    else:
        try:  # a fresh connection: a 5xx may have left the pooled one closed
            assert httpx.get(client.base_url.join("/openapi.json"), timeout=10).status_code == 200
        except (httpx.HTTPError, AssertionError) as exc:
            tally.failures.append(f"the gateway stopped answering: {exc!r}")
    assert not tally.failures, f"{tally.summary()}\n" + "\n".join(tally.failures[:20])
    assert tally.server_errors == 0
    assert tally.cases >= FUZZ_EXAMPLES * 0.9, tally.summary()


# -- the fuzzer --------------------------------------------------------------------------------------


def test_fuzz_openai_uploads(fuzz_client, fuzz_files, fuzz_memory):
    _fuzz(fuzz_client, fuzz_memory, Tally("openai"), upload_cases(fuzz_files, OPENAI_ROUTES))


def test_fuzz_legacy_uploads(fuzz_client, fuzz_files, fuzz_memory):
    _fuzz(fuzz_client, fuzz_memory, Tally("legacy"), upload_cases(fuzz_files, LEGACY_ROUTES))


# -- explicit hostile cases ------------------------------------------------------------------------------


def _error(r: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.parametrize("route", [*OPENAI_ROUTES, "/transcribe/file"])
@pytest.mark.parametrize("name", HOSTILE_NAMES[:18])
def test_hostile_model_names_are_404_before_triton(fuzz_client, fuzz_files, route, name):
    r = fuzz_client.post(route, files={"file": ("clip.wav", fuzz_files["wav"])}, data={"model": name})
    error = _error(r, 404, "model_not_found")
    assert error["param"] == "model"
    assert not problems(route, r)


def test_hostile_model_name_in_the_binary_query(fuzz_client, fuzz_files):
    for name in ("../../etc/passwd", "whisper\x00", "\u202ewhisper"):
        r = fuzz_client.post("/transcribe/binary", params={"model": name}, content=fuzz_files["wav"])
        _error(r, 404, "model_not_found")
        assert r.json()["success"] is False and not problems("/transcribe/binary", r)


@pytest.mark.parametrize(("headers", "what"), [
    ({"X-Big": "a" * 65536}, "one 64 KiB header"),
    ({f"X-H{i}": "v" for i in range(200)}, "200 headers"),
    ({"Authorization": "Bearer " + "t" * 40_000}, "a 40 KB token"),
    ({f"X-H{i}": "v" * 1000 for i in range(60)}, "60 KB over 60 headers"),
    ({"X-Big": "a" * 1024 * 1024}, "one 1 MiB header"),
])
def test_huge_headers_get_4xx(fuzz_client, fuzz_files, fuzz_memory, headers, what):
    r = fuzz_client.post(OPENAI_ROUTES[0], files={"file": ("clip.wav", fuzz_files["wav"])}, headers=headers)
    assert r.status_code in (400, 431), (what, r.status_code, r.text[:200])
    if r.status_code == 431:
        _error(r, 431, "request_header_fields_too_large")
    assert alive(fuzz_memory["pid"])
    assert fuzz_client.get("/openapi.json").status_code == 200


def test_ten_hour_silent_file_is_refused_from_its_header(fuzz_gateway, gateway):
    """64 KB of FLAC declaring 10 hours: refused before decoding, at the fuzz limit and the default one."""
    data = silent_flac(10 * 3600)
    assert len(data) < 4 * 1024 * 1024
    for url, limit in ((fuzz_gateway, FUZZ_MAX_AUDIO_SECONDS), (gateway, 3600)):
        started = time.perf_counter()
        r = httpx.post(f"{url}{OPENAI_ROUTES[0]}", files={"file": ("silence.flac", data)}, timeout=60)
        elapsed = time.perf_counter() - started
        error = _error(r, 400, "audio_too_long")
        assert error["param"] == "file" and f"{limit:g} seconds" in error["message"]
        assert elapsed < 5, f"took {elapsed:.1f} s"


def test_decompression_bomb_stops_at_the_limit(fuzz_gateway, fuzz_memory, gateway):
    """64 KB of FLAC that hides its length and decodes to 10 hours (2.3 GB as 16 kHz float32): decoding
    stops at the limit, so memory grows by at most the limit's worth (600 s: 38 MB; 3600 s: 230 MB)."""
    bomb = silent_flac(10 * 3600, declare_length=False)
    default_pid = gateway.pid
    default_before = memory_mb(default_pid)["VmHWM"]
    for url, pid, limit in ((fuzz_gateway, fuzz_memory["pid"], FUZZ_MAX_AUDIO_SECONDS),
                            (gateway, default_pid, 3600)):
        started = time.perf_counter()
        r = httpx.post(f"{url}{OPENAI_ROUTES[0]}", files={"file": ("bomb.flac", bomb)}, timeout=120)
        elapsed = time.perf_counter() - started
        _error(r, 400, "audio_too_long")
        assert elapsed < 30, f"took {elapsed:.1f} s"
        assert alive(pid)
    growth = memory_mb(default_pid)["VmHWM"] - default_before
    print(f"\ndefault gateway: the bomb raised its peak RSS by {growth:.0f} MB (limit {RSS_GROWTH_LIMIT_MB})")
    assert growth < RSS_GROWTH_LIMIT_MB


def test_one_hertz_wav_is_refused_before_resampling(fuzz_client):
    """A WAV at 1 Hz: each 4096-sample packet is 68 minutes; resampled to 16 kHz it would be 262 MB."""
    data = wav_header(rate=1, data_bytes=2 * 40_000) + bytes(2 * 40_000)
    _error(fuzz_client.post(OPENAI_ROUTES[0], files={"file": ("slow.wav", data)}), 400, "audio_too_long")


def test_wav_header_declaring_ten_hours(fuzz_client, fuzz_files):
    """A WAV header that claims 10 hours in front of 3 s of samples: FFmpeg trusts the file size, so it
    decodes as what it is (or is refused), never a 5xx and never a 10-hour allocation."""
    samples = fuzz_files["wav"][44:]
    data = wav_header(rate=16000, data_bytes=16000 * 2 * 36000) + samples
    r = fuzz_client.post(OPENAI_ROUTES[0], files={"file": ("lying.wav", data)}, data={"model": "whisper-tiny-en"})
    assert r.status_code == 200 or not problems(OPENAI_ROUTES[0], r), r.text


def test_fuzz_memory_stays_bounded(fuzz_memory):
    """Runs after the fuzzer and the explicit cases on the fuzz gateway (file order): peak RSS growth."""
    after = memory_mb(fuzz_memory["pid"])
    growth = after["VmHWM"] - fuzz_memory["before"]["VmHWM"]
    print(f"\nfuzz gateway: peak RSS {fuzz_memory['before']['VmHWM']:.0f} -> {after['VmHWM']:.0f} MB "
          f"(growth {growth:.0f} MB, limit {RSS_GROWTH_LIMIT_MB} MB)")
    assert growth < RSS_GROWTH_LIMIT_MB


@pytest.mark.parametrize(("route", "fields"), [
    ("/v1/audio/translations", {"model": "whisper-tiny-en"}),  # English-only: cannot translate
    (OPENAI_ROUTES[0], {"model": "whisper-tiny-en", "language": "de"}),  # English-only: no German
])
def test_a_refused_request_sent_again_is_refused_again(fuzz_gateway, fuzz_files, route, fields):
    """The model's refusal must not turn into a 5xx the second time: Triton's response cache must not
    answer an identical request with an empty (cached) response."""
    data = fuzz_files["flac"] + b"\0" * len(route + str(fields))  # bytes of its own: no earlier cache entry
    answers = [httpx.post(f"{fuzz_gateway}{route}", files={"file": ("clip.flac", data)}, data=fields, timeout=60)
               for _ in range(3)]  # a connection each: a 500 closes its connection
    assert [r.status_code for r in answers] == [400, 400, 400], [r.text[:200] for r in answers]
    assert all(not problems(route, r) for r in answers)
