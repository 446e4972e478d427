"""The two baselines, each a FastAPI server in its own process, with the gateway's OpenAI endpoint.

    BASELINE_KIND=seed    uvicorn benchmarks.baselines:create_app --factory --port 9001
    BASELINE_KIND=batched uvicorn benchmarks.baselines:create_app --factory --port 9002

(a) ``seed``: one faster-whisper ``WhisperModel`` transcribing requests one at a time (a lock), as the
    servers this project replaces do.
(b) ``batched``: faster-whisper's ``BatchedInferencePipeline`` per request (VAD chunks of one request
    batched together), requests served as they come.

Both: the same model path, compute type, beam and thread count, read from the environment
(``BASELINE_MODEL``, ``BASELINE_COMPUTE_TYPE``, ``BASELINE_BEAM``, ``BASELINE_CPU_THREADS``,
``BASELINE_BATCH_SIZE``), and the same CPU instruction set as the service (``BASELINE_CPU_ISA``, default
``auto``, see ``whisper_triton/cpu.py``), so that no system gets a faster kernel than the other.
"""

from __future__ import annotations

import io
import os
import threading
import time
from typing import Annotated, Optional

from fastapi import FastAPI, File, Form, UploadFile


def settings() -> dict:
    return {
        "kind": os.environ.get("BASELINE_KIND", "seed"),
        "model": os.environ.get("BASELINE_MODEL", ""),
        "compute_type": os.environ.get("BASELINE_COMPUTE_TYPE", "int8"),
        "beam_size": int(os.environ.get("BASELINE_BEAM", "5")),
        "cpu_threads": int(os.environ.get("BASELINE_CPU_THREADS", "2")),
        "batch_size": int(os.environ.get("BASELINE_BATCH_SIZE", "8")),
        "cpu_isa": os.environ.get("BASELINE_CPU_ISA", "auto"),
    }


def create_app() -> FastAPI:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    from whisper_triton.cpu import apply_isa

    cfg = settings()
    cfg["cpu_isa_used"] = apply_isa(cfg["cpu_isa"])  # before the model loads, as the service does
    if not cfg["model"]:
        from whisper_triton import weights

        cfg["model"] = str(weights.resolve("bundled:base"))
    model = WhisperModel(cfg["model"], device="cpu", compute_type=cfg["compute_type"], cpu_threads=cfg["cpu_threads"], num_workers=1)
    pipeline = BatchedInferencePipeline(model) if cfg["kind"] == "batched" else None
    lock = threading.Lock()
    app = FastAPI(title=f"baseline {cfg['kind']}")
    app.state.config = cfg

    def run(data: bytes, language: Optional[str]) -> dict:
        audio = decode_audio(io.BytesIO(data))
        started = time.perf_counter()
        if pipeline is None:
            with lock:  # one request at a time
                segments, info = model.transcribe(audio, language=language or None, beam_size=cfg["beam_size"])
                text = "".join(s.text for s in segments).strip()
        else:
            segments, info = pipeline.transcribe(audio, language=language or None, beam_size=cfg["beam_size"], batch_size=cfg["batch_size"])
            text = "".join(s.text for s in segments).strip()
        return {"text": text, "language": info.language, "duration": info.duration, "compute_s": round(time.perf_counter() - started, 4)}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "config": cfg}

    # A sync endpoint: FastAPI runs it in its thread pool, so the event loop keeps accepting requests.
    @app.post("/v1/audio/transcriptions")
    def transcriptions(file: Annotated[UploadFile, File()], model_name: Annotated[str, Form(alias="model")] = "whisper-1",
                       language: Annotated[Optional[str], Form()] = None, response_format: Annotated[str, Form()] = "json") -> dict:
        return run(file.file.read(), language)

    return app
