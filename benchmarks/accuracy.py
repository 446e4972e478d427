"""Accuracy against faster-whisper's own ``WhisperModel.transcribe``, per language, on a fixed dev split.

    python -m benchmarks.accuracy split                        # (re)write benchmarks/devset.tsv (done once)
    python -m benchmarks.accuracy reference --half tune --out fw.json
    python -m benchmarks.accuracy engine --half tune --reference fw.json [--params JSON] [--per-call 4]

The dev set is every clip of ``../shared/audio`` with unique content (``formats/``, ``video/`` and
``long/`` repeat other clips and are left out), split once into a **tune** half and a **check** half by
file name (``devset.tsv``, stratified by language and by source family, so each half has some of every
kind of recording). Settings are tuned on ``tune``; the report is made on ``check``.

Scoring (both systems get the same): Whisper's English normaliser for English, the basic normaliser for
other space-delimited languages (word error rate), characters for zh/yue/ja (character error rate; zh and
yue after converting both sides to Simplified). Corpus-level per language: errors over reference length.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jiwer

from .common import DEFAULT_AUDIO, Clip, audio_of

SPLIT_FILE = Path(__file__).with_name("devset.tsv")
REPEATS = ("formats", "video", "long")  # folders that repeat other clips' content
CHARACTER_LANGUAGES = ("zh", "yue", "ja", "ko")
# Languages the base model has no token for are decoded as their closest relative (both systems alike).
DECODE_AS = {"yue": "zh"}


@dataclass(frozen=True)
class DevClip(Clip):
    """A clip of the dev set, any language."""

    @property
    def decode_language(self) -> str:
        return DECODE_AS.get(self.language, self.language)


def dev_clips(audio_dir: Path = DEFAULT_AUDIO) -> list[DevClip]:
    with open(Path(audio_dir) / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        DevClip(r["file"], Path(audio_dir) / r["file"], r["language"], float(r["duration_seconds"]), r["reference_text"])
        for r in rows
        if r["file"].split("/")[0] not in REPEATS and r.get("reference_text")
    ]


def _family(file: str) -> str:
    name = Path(file).name
    if name[0].isdigit():
        return "librispeech"
    match = re.match(r"[A-Za-z]+", name)
    return match.group(0).lower() if match else name


def make_split(clips: list[DevClip]) -> dict[str, str]:
    """Within each language, clips sorted by (family, hash of the name) and dealt alternately."""
    halves: dict[str, str] = {}
    by_language: dict[str, list[DevClip]] = defaultdict(list)
    for clip in clips:
        by_language[clip.language].append(clip)
    for language, members in sorted(by_language.items()):
        members.sort(key=lambda c: (_family(c.file), hashlib.sha1(c.file.encode()).hexdigest()))
        for index, clip in enumerate(members):
            halves[clip.file] = "tune" if index % 2 == 0 else "check"
    return halves


def read_split(path: Path = SPLIT_FILE) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row["half"] for row in csv.DictReader(fh, delimiter="\t")}


def half(name: str, audio_dir: Path = DEFAULT_AUDIO) -> list[DevClip]:
    """The clips of one half (``tune``, ``check`` or ``all``) that exist in ``audio_dir``."""
    clips = dev_clips(audio_dir)
    if name == "all":
        return clips
    halves = read_split()
    return [c for c in clips if halves.get(c.file) == name]


# ---------------------------------------------------------------- scoring
@lru_cache(maxsize=1)
def _normalisers():
    import opencc
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer(), BasicTextNormalizer(), opencc.OpenCC("t2s")


def normalize(text: str, language: str) -> str:
    english, basic, t2s = _normalisers()
    if language in CHARACTER_LANGUAGES:
        if language in ("zh", "yue"):
            text = t2s.convert(text)
        return " ".join("".join(basic(text).split()))
    if language == "en":
        return " ".join(english(text).split())
    return " ".join(basic(text).split())


def errors(reference: str, hypothesis: str, language: str) -> tuple[int, int]:
    """(edit operations, reference length) in the language's unit."""
    ref = normalize(reference, language).split()
    hyp = normalize(hypothesis, language).split()
    if not ref:
        return len(hyp), 0
    if not hyp:
        return len(ref), len(ref)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def metric(language: str) -> str:
    return "CER" if language in CHARACTER_LANGUAGES else "WER"


def table(clips: list[DevClip], systems: dict[str, dict[str, str]], anchor: str = "faster-whisper") -> dict:
    """Per language: each system's corpus error rate, the gap to ``anchor`` in points, the clips whose
    error differs most, and empty outputs where the anchor has text."""
    out: dict = {}
    by_language: dict[str, list[DevClip]] = defaultdict(list)
    for clip in clips:
        by_language[clip.language].append(clip)
    for language, members in sorted(by_language.items()):
        row: dict = {"clips": len(members), "metric": metric(language), "rates": {}, "empty": {}}
        per_clip: dict[str, dict[str, float]] = defaultdict(dict)
        for name, texts in systems.items():
            total_err = total_len = 0
            empty = []
            for clip in members:
                text = texts.get(clip.file, "")
                e, n = errors(clip.reference, text, language)
                total_err += e
                total_len += n
                per_clip[clip.file][name] = e / max(n, 1)
                if not text.strip() and systems.get(anchor, {}).get(clip.file, "").strip():
                    empty.append(clip.file)
            row["rates"][name] = round(total_err / max(total_len, 1), 4)
            row["empty"][name] = empty
        if anchor in systems:
            row["gap_points"] = {n: round(100 * (r - row["rates"][anchor]), 2) for n, r in row["rates"].items() if n != anchor}
            diffs = []
            for file, rates in per_clip.items():
                for name, rate in rates.items():
                    if name != anchor:
                        diffs.append((round(rate - rates[anchor], 4), file, name))
            diffs.sort(reverse=True)
            row["worst"] = [{"file": f, "system": n, "delta": d} for d, f, n in diffs[:3] if d > 0]
        out[language] = row
    return out


def print_table(result: dict) -> None:
    for language, row in result.items():
        rates = "  ".join(f"{n} {100 * r:5.1f}%" for n, r in row["rates"].items())
        gaps = "  ".join(f"gap {n} {g:+.1f}" for n, g in row.get("gap_points", {}).items())
        empty = {n: len(e) for n, e in row["empty"].items() if e}
        print(f"  {language:<4} {row['metric']} ({row['clips']:2d})  {rates}  {gaps}  {'empty ' + str(empty) if empty else ''}")


# ---------------------------------------------------------------- systems
def faster_whisper_texts(clips: list[DevClip], model: str = "bundled:base", beam_size: int = 5, cpu_threads: int = 2,
                         cpu_isa: str = "auto") -> dict[str, str]:
    """faster-whisper's own ``transcribe`` (its defaults: no VAD, 30 s windows, temperature fallback), language given."""
    from faster_whisper import WhisperModel

    from whisper_triton import weights
    from whisper_triton.cpu import apply_isa

    apply_isa(cpu_isa)
    fw = WhisperModel(str(weights.resolve(model)), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    texts = {}
    for clip in clips:
        segments, _ = fw.transcribe(audio_of(str(clip.path)), language=clip.decode_language, beam_size=beam_size)
        texts[clip.file] = "".join(s.text for s in segments).strip()
    return texts


def http_texts(url: str, clips: list[DevClip], concurrency: int = 4, model: str = "whisper-1",
               timeout_s: float = 900.0) -> dict[str, str]:
    """Each clip sent to an OpenAI-style ``/v1/audio/transcriptions`` (the gateway, or the seed-style server,
    which is faster-whisper's ``transcribe``) with its language given; {file: text} ("" where it failed)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def one(clip: DevClip) -> tuple[str, str]:
        data = {"model": model, "language": clip.decode_language, "response_format": "json"}
        try:
            response = httpx.post(f"{url}/v1/audio/transcriptions", timeout=timeout_s, data=data,
                                  files={"file": (clip.path.name, clip.path.read_bytes(), "application/octet-stream")})
            return clip.file, response.json().get("text", "") if response.status_code == 200 else ""
        except (httpx.HTTPError, ValueError):
            return clip.file, ""

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return dict(pool.map(one, clips))


def engine_texts(clips: list[DevClip], params: dict, per_call: int = 4) -> tuple[dict[str, str], dict]:
    """The service's engine in-process, ``per_call`` requests per ``transcribe`` (as Triton's batcher hands them)."""
    from whisper_triton.config import EngineConfig
    from whisper_triton.engine import WhisperEngine
    from whisper_triton.protocol import Options
    from whisper_triton.types import TranscriptionRequest

    engine = WhisperEngine(EngineConfig.from_parameters(params), device="cpu")
    engine.warmup()
    texts, details = {}, {}
    started = time.perf_counter()
    ordered = sorted(clips, key=lambda c: hashlib.sha1(c.file.encode()).hexdigest())  # mixed lengths per call
    for i in range(0, len(ordered), per_call):
        group = ordered[i : i + per_call]
        requests = [TranscriptionRequest(audio_of(str(c.path)), Options(language=c.decode_language)) for c in group]
        for clip, result in zip(group, engine.transcribe(requests)):
            texts[clip.file] = getattr(result, "text", "")
            segments = getattr(result, "segments", [])
            details[clip.file] = {"min_logprob": min((s.avg_logprob for s in segments), default=None),
                                  "fallbacks": getattr(result, "fallbacks", 0)}
    elapsed = time.perf_counter() - started
    stats = {"elapsed_s": round(elapsed, 2), "audio_s": round(sum(c.duration for c in clips), 2),
             "rtfx": round(sum(c.duration for c in clips) / elapsed, 2),
             "windows": engine.stats.windows, "fallbacks": engine.stats.fallbacks, "batches": engine.stats.batches,
             "clips": details}
    return texts, stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["split", "reference", "engine"])
    parser.add_argument("--half", default="tune", choices=["tune", "check", "all"])
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reference", type=Path, help="faster-whisper texts from the reference mode")
    parser.add_argument("--params", default="", help="JSON of EngineConfig parameters (strings)")
    parser.add_argument("--per-call", type=int, default=4)
    parser.add_argument("--languages", default="", help="comma-separated subset")
    args = parser.parse_args(argv)

    if args.mode == "split":
        halves = make_split(dev_clips(args.audio_dir))
        with open(SPLIT_FILE, "w", encoding="utf-8") as fh:
            fh.write("file\thalf\n")
            for file in sorted(halves):
                fh.write(f"{file}\t{halves[file]}\n")
        print(f"wrote {SPLIT_FILE}: {sum(v == 'tune' for v in halves.values())} tune, {sum(v == 'check' for v in halves.values())} check")
        return 0
    clips = half(args.half, args.audio_dir)
    if args.languages:
        clips = [c for c in clips if c.language in args.languages.split(",")]
    if args.mode == "reference":
        texts = faster_whisper_texts(clips)
        if args.out:
            args.out.write_text(json.dumps(texts, indent=1, ensure_ascii=False))
        print_table(table(clips, {"faster-whisper": texts}))
        return 0
    reference = json.loads(args.reference.read_text()) if args.reference else {}
    params = json.loads(args.params) if args.params else {}
    texts, stats = engine_texts(clips, params, args.per_call)
    if reference:
        stats["identical"] = sum(texts[c.file] == reference.get(c.file) for c in clips)
    print(json.dumps({"params": params, **{k: v for k, v in stats.items() if k != "clips"}}))
    result = table(clips, {"faster-whisper": reference, "engine": texts} if reference else {"engine": texts})
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps({"params": params, "stats": stats, "texts": texts, "table": result}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
