"""In-process measurements with ``WhisperEngine`` (no Triton, no HTTP), each run in its own process.

    python -m benchmarks.inprocess levers    --out levers.json [--quick] [--audio-dir DIR]
    python -m benchmarks.inprocess reference --out ref.json    [--audio-dir DIR] [--params JSON]

``levers``: the deployment levers on the short English clips. A config is (instances x cpu_threads,
requests per ``transcribe`` call = what Triton's dynamic batcher hands one instance, max_batch_windows,
context_floor_s, compute_type, length grouping). Instances are separate processes started together,
sharing the clips round-robin, as Triton's instances share the queue.

``reference``: the "model in-process" figure for the gateway overhead: one request per
``transcribe`` call, one at a time, with the deployed model's parameters (one instance's threads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

from .common import DEFAULT_AUDIO, error_rate, load_clips, short_set

# name, instances, cpu_threads, requests per call, max_batch_windows, context_floor_s, compute_type,
# group_by_length, context_margin_s, max_tokens_per_s[, other parameters]
LEVERS = [
    ("sequential, 30 s context, 1x2 threads", 1, 2, 1, 1, 30.0, "int8", True, 0.0, 0.0),
    ("30 s context (faster-whisper's own decode) + batch 2, 2x1 (deployed)", 2, 1, 4, 2, 30.0, "int8", True, 0.0, 12.0),
    ("30 s context + batch 4, 2x1", 2, 1, 4, 4, 30.0, "int8", True, 0.0, 12.0),
    ("trim 15 + batch 4, 2x1 (deployed until 2026-11-21)", 2, 1, 4, 4, 15.0, "int8", True, 0.0, 0.0, {"trim_min_logprob": "-10"}),
    ("margin 3 (floor 8) + batch 2, 2x1, every trimmed decode kept", 2, 1, 4, 2, 8.0, "int8", True, 3.0, 12.0, {"trim_min_logprob": "-10"}),
    ("margin 3 (floor 8) + batch 2, 2x1, recheck below -0.8 (trim_languages en)", 2, 1, 4, 2, 8.0, "int8", True, 3.0, 12.0),
    ("trimmed, recheck below -0.5", 2, 1, 4, 2, 8.0, "int8", True, 3.0, 12.0, {"trim_min_logprob": "-0.5"}),
    ("trimmed + vad_filter (speech only)", 2, 1, 4, 2, 8.0, "int8", True, 3.0, 12.0, {"vad_filter": "true"}),
    ("30 s context, AVX2 kernels (ctranslate2's choice on AMD)", 2, 1, 4, 2, 30.0, "int8", True, 0.0, 12.0, {"cpu_isa": "AVX2"}),
    ("margin 5 (floor 10) + batch 2, 2x1", 2, 1, 4, 2, 10.0, "int8", True, 5.0, 12.0),
    ("margin 3 + batch 4, 2x1", 2, 1, 4, 4, 8.0, "int8", True, 3.0, 12.0),
    ("margin 3 + batch 1, 2x1", 2, 1, 4, 1, 8.0, "int8", True, 3.0, 12.0),
    ("margin 3 + batch 2, no token budget, 2x1", 2, 1, 4, 2, 8.0, "int8", True, 3.0, 0.0),
    ("margin 3 + batch 2, no length grouping, 2x1", 2, 1, 4, 2, 8.0, "int8", False, 3.0, 12.0),
    ("margin 3 + batch 2, 2x1, float32", 2, 1, 4, 2, 8.0, "float32", True, 3.0, 12.0),
]
QUICK = {0, 1, 4, 5}


def deployed_parameters(repository: Path) -> dict:
    """The ``parameters`` block of ``<repository>/whisper/config.pbtxt`` as {key: value}."""
    import re

    text = (repository / "whisper" / "config.pbtxt").read_text()
    return dict(re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))


def _engine(params: dict):
    from whisper_triton.config import EngineConfig
    from whisper_triton.engine import WhisperEngine

    engine = WhisperEngine(EngineConfig.from_parameters(params), device="cpu")
    engine.warmup()
    return engine


def _worker(params: dict, groups: list[list[tuple[str, str, float]]], group_by_length: bool, barrier, queue) -> None:
    from whisper_triton import engine as engine_module
    from whisper_triton.types import DecodeOptions, TranscriptionRequest

    from .common import audio_of

    if not group_by_length:
        def arrival_order(keys, lengths, max_batch):
            out, current, key = [], [], None
            for i, k in enumerate(keys):
                if current and (k != key or len(current) == max_batch):
                    out.append(current)
                    current = []
                current.append(i)
                key = k
            return out + ([current] if current else [])

        engine_module.plan_batches = arrival_order
    engine = _engine(params)
    audios = {f: audio_of(p) for g in groups for f, p, _ in g}
    texts = {}
    barrier.wait()
    started = time.perf_counter()
    for group in groups:
        requests = [TranscriptionRequest(audios[f], DecodeOptions(language=lang)) for f, _, lang in group]
        for (f, _, _), result in zip(group, engine.transcribe(requests)):
            texts[f] = result.text
    elapsed = time.perf_counter() - started
    queue.put({"elapsed": elapsed, "texts": texts, "windows": engine.stats.windows, "fallbacks": engine.stats.fallbacks,
               "batches": engine.stats.batches})


def run_config(params: dict, clips, instances: int, per_call: int, group_by_length: bool) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(instances), ctx.Queue()
    items = [(c.file, str(c.path), c.language) for c in clips]
    groups = [items[i : i + per_call] for i in range(0, len(items), per_call)]
    shares = [groups[i::instances] for i in range(instances)]
    procs = [ctx.Process(target=_worker, args=(params, share, group_by_length, barrier, queue)) for share in shares]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    wall = max(o["elapsed"] for o in outs)
    texts = {k: v for o in outs for k, v in o["texts"].items()}
    audio = sum(c.duration for c in clips)
    en = [c for c in clips if c.language == "en"]
    windows = sum(o["windows"] for o in outs)
    fallbacks = sum(o["fallbacks"] for o in outs)
    return {
        "wall_s": round(wall, 3), "audio_s": round(audio, 3), "rtfx": round(audio / wall, 3),
        "wer_en": error_rate([c.reference for c in en], [texts[c.file] for c in en], "en") if en else None,
        "windows": windows, "fallbacks": fallbacks, "fallback_rate": round(fallbacks / windows, 4) if windows else None,
        "batches": sum(o["batches"] for o in outs),
    }


def levers(args) -> dict:
    clips = short_set(load_clips(args.audio_dir), languages=("en",))
    if args.quick:
        clips = clips[: args.quick_clips]
    base = json.loads(args.params) if args.params else {}
    rows = []
    for index, (name, instances, threads, per_call, mbw, floor, compute, grouping, margin, budget, *other) in enumerate(LEVERS):
        if args.quick and index not in QUICK:
            continue
        params = {**base, "cpu_threads": str(threads), "max_batch_windows": str(mbw), "context_floor_s": str(floor),
                  "compute_type": compute, "context_margin_s": str(margin), "max_tokens_per_s": str(budget),
                  # a context under 30 s is the trimmed first pass, which only trim_languages turns on
                  **({"trim_languages": "*"} if floor < 30 else {}), **(other[0] if other else {})}
        result = run_config(params, clips, instances, per_call, grouping)
        row = {"name": name, "instances": instances, "cpu_threads": threads, "requests_per_call": per_call,
               "max_batch_windows": mbw, "context_floor_s": floor, "context_margin_s": margin, "max_tokens_per_s": budget,
               "compute_type": compute, "group_by_length": grouping, **result}
        rows.append(row)
        print(f"    {name:<48s} RTFx {row['rtfx']:6.2f}  WER {row['wer_en']:.3f}  fallbacks {row['fallbacks']}/{row['windows']}", flush=True)
    return {"clips": [c.file for c in clips], "rows": rows}


def reference(args) -> dict:
    from whisper_triton.types import DecodeOptions, TranscriptionRequest

    from .common import audio_of

    clips = short_set(load_clips(args.audio_dir))
    if args.files:
        wanted = args.files.split(",")
        clips = [c for c in clips if c.file in wanted]
    elif args.quick:
        clips = clips[: args.quick_clips]
    params = json.loads(args.params) if args.params else {}
    engine = _engine(params)
    for clip in clips[:2]:  # first calls at each new shape are slower; not part of the figure
        engine.transcribe([TranscriptionRequest(audio_of(str(clip.path)), DecodeOptions(language=clip.language))])
    engine.stats.windows = engine.stats.fallbacks = 0
    rows = []
    for repeat in range(args.repeats):
        for clip in clips:
            audio = audio_of(str(clip.path))
            started = time.perf_counter()
            result = engine.transcribe([TranscriptionRequest(audio, DecodeOptions(language=clip.language))])[0]
            rows.append({"file": clip.file, "duration": clip.duration, "latency_s": time.perf_counter() - started, "text": result.text, "repeat": repeat})
    return {"params": params, "rows": rows, "windows": engine.stats.windows, "fallbacks": engine.stats.fallbacks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["levers", "reference"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--params", default="", help="JSON of EngineConfig parameters (strings)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--quick-clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--files", default="", help="comma-separated manifest files (reference mode)")
    args = parser.parse_args(argv)
    out = levers(args) if args.mode == "levers" else reference(args)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
