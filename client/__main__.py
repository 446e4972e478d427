"""CLI: ``python -m client transcribe FILE... [--url localhost:8001] [--format text|json|srt|vtt]``
and ``python -m client stream FILE [--speed N]`` (live transcription through the gateway's WebSocket).

Files are decoded locally (any audio/video FFmpeg reads) and sent straight to the Triton model; many
files run concurrently, so Triton batches them, with a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from .audio import AudioDecodeError, decode_file
from .core import WhisperTritonClient
from .formats import to_srt, to_vtt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe files directly through Triton")
    t.add_argument("files", nargs="+")
    t.add_argument("--url", default="localhost:8001", help="Triton address (gRPC :8001, or HTTP :8000 with --protocol http)")
    t.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    t.add_argument("--model", default="whisper", help="Triton model name (whisper, whisper-tiny-en, ...)")
    t.add_argument("--language", default="", help="language code; empty = detect")
    t.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    t.add_argument("--prompt", default="")
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text")
    t.add_argument("--concurrency", type=int, default=8)
    t.add_argument("--timeout", type=float, default=None, help="client timeout in seconds")
    return parser


def _render(result, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"text": result.text, "language": result.language, "duration": result.duration,
                           "segments": [s.to_dict() for s in result.segments]}, ensure_ascii=False)
    if fmt == "srt":
        return to_srt(result.segments)
    if fmt == "vtt":
        return to_vtt(result.segments)
    return result.text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stream"]:  # WebSocket streaming through the gateway (client/stream.py)
        from .stream import main_stream

        return main_stream(argv[1:])
    args = _parser().parse_args(argv)
    local = threading.local()

    def run(path: str):
        if not hasattr(local, "client"):
            local.client = WhisperTritonClient(args.url, args.model, args.protocol, args.timeout)
        audio = decode_file(path)
        return local.client.transcribe(audio, args.language, args.task, args.prompt, args.word_timestamps)

    failures = 0
    results: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        futures = {pool.submit(run, path): path for path in args.files}
        for future in tqdm(as_completed(futures), total=len(futures), unit="file", disable=len(futures) < 2, file=sys.stderr):
            path = futures[future]
            try:
                results[path] = _render(future.result(), args.format)
            except (AudioDecodeError, OSError) as exc:
                failures += 1
                print(f"{path}: error: {exc}", file=sys.stderr)
            except Exception as exc:  # tritonclient's InferenceServerException and friends
                failures += 1
                message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
                print(f"{path}: error: {message}", file=sys.stderr)
    for path in args.files:
        if path in results:
            if len(args.files) > 1 and args.format != "json":
                print(f"==> {path} <==")
            print(results[path])
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
