"""The speaker encoder's weights: Resemblyzer's GE2E ``pretrained.pt``, from its PyPI wheel, without torch.

The wheel (17 MB of weights inside a 15 MB wheel) declares torch as a dependency, so it is fetched with
``pip download --no-deps`` (the package registry, no model hub), checked against a pinned sha256, and its
``pretrained.pt`` (the legacy, pre-zip torch format: pickles followed by raw storages) is read by a
restricted unpickler that maps each storage to numpy. The arrays are kept as ``ge2e.npz`` in the
weights cache; converting and loading check the arrays against a pinned sha256.

``python -m whisper_triton.weights provision`` provisions it with the Whisper weights (fetched, or taken
from ``$WHISPER_TRITON_WHEELS``); ``python -m whisper_triton.weights fetch-speaker DIR`` only fetches the
checked wheel into DIR (image builds).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from whisper_triton.weights import ModelError, cache_dir, sha256_of

WHEEL = "resemblyzer==0.1.4"
WHEEL_SHA256 = "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
MEMBER = "resemblyzer/pretrained.pt"
MEMBER_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
WHEEL_FILE = "Resemblyzer-0.1.4-py3-none-any.whl"
WHEELS_ENV = "WHISPER_TRITON_WHEELS"  # a folder that already holds the wheel (an image without internet)
NPZ = "ge2e.npz"
ARRAYS_SHA256 = "bc717f006ac450964db800cf2d28902693d0e953632f85bf330fde67e9b70532"  # names and float32 bytes
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


def target_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "speaker-ge2e"


class _Storage:
    def __init__(self, dtype: type) -> None:
        self.dtype = dtype


class _Tensor:
    """A tensor whose storage is read after the pickle: (storage key, offset, shape, stride)."""

    def __init__(self, key: str, offset: int, shape: tuple, stride: tuple) -> None:
        self.key, self.offset, self.shape, self.stride = key, offset, tuple(shape), tuple(stride)


def _rebuild_tensor(storage, offset, shape, stride, *_):
    return _Tensor(storage, offset, shape, stride)


class _Unpickler(pickle.Unpickler):
    """Only what a state dict needs: storages, tensor rebuilds and OrderedDict; anything else refused."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return _Storage(DTYPES[name])
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid[0]!r}")
        self.dtypes[pid[2]] = pid[1].dtype
        return pid[2]


def read_legacy_torch(data: bytes) -> dict:
    """A legacy-format torch checkpoint -> the same nested dicts with numpy arrays for tensors."""
    fh = io.BytesIO(data)

    def load():
        unpickler = _Unpickler(fh)
        unpickler.dtypes = dtypes
        return unpickler.load()

    dtypes: dict[str, type] = {}
    if load() != LEGACY_MAGIC:
        raise ModelError("not a legacy torch file (the zip format is not supported here)")
    load()  # protocol version
    load()  # sys info
    obj = load()
    keys = load()
    storages = {}
    for key in keys:
        numel = int.from_bytes(fh.read(8), "little")
        dtype = np.dtype(dtypes[key])
        storages[key] = np.frombuffer(fh.read(numel * dtype.itemsize), dtype=dtype)

    def resolve(value):
        if isinstance(value, _Tensor):
            flat = storages[value.key]
            itemsize = flat.dtype.itemsize
            return np.lib.stride_tricks.as_strided(
                flat[value.offset:], shape=value.shape, strides=[s * itemsize for s in value.stride]).copy()
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    return resolve(obj)


def arrays_from_checkpoint(checkpoint: dict) -> dict[str, np.ndarray]:
    state = checkpoint["model_state"]
    return {name: np.asarray(value, dtype=np.float32) for name, value in state.items()
            if isinstance(value, np.ndarray)}


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "--dest", str(into), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelError(f"could not fetch the speaker weights ({WHEEL}) from the package index: "
                         f"{done.stderr.strip()[-400:]}")
    return wheels[0]


def fetch(into: Path) -> Path:
    """The checked wheel in ``into`` (downloaded unless it is there already)."""
    into.mkdir(parents=True, exist_ok=True)
    wheel = into / WHEEL_FILE
    if not wheel.is_file():
        wheel = _download_wheel(into)
    if sha256_of(wheel) != WHEEL_SHA256:
        raise ModelError(f"{wheel} does not have the pinned sha256 {WHEEL_SHA256}")
    return wheel


def provision(root: Path | None = None, wheel: Path | None = None) -> Path:
    """Fetch, check and convert the GE2E weights into ``root/speaker-ge2e/ge2e.npz`` (idempotent, atomic)."""
    target = target_dir(root)
    if (target / NPZ).is_file():
        return target / NPZ
    target.mkdir(parents=True, exist_ok=True)
    if wheel is None and os.environ.get(WHEELS_ENV) and (Path(os.environ[WHEELS_ENV]) / WHEEL_FILE).is_file():
        wheel = Path(os.environ[WHEELS_ENV]) / WHEEL_FILE
    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch.") as tmp:
        wheel = fetch(Path(tmp)) if wheel is None else wheel
        if sha256_of(wheel) != WHEEL_SHA256:
            raise ModelError(f"{wheel.name} does not have the pinned sha256 {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
        arrays = arrays_from_checkpoint(read_legacy_torch(data))
        if arrays_sha256(arrays) != ARRAYS_SHA256:
            raise ModelError("the converted speaker weights do not have the pinned sha256")
        with tempfile.NamedTemporaryFile(dir=target, prefix=".ge2e.", suffix=".npz", delete=False) as out:
            np.savez(out, **arrays)
        os.chmod(out.name, 0o644)
        os.replace(out.name, target / NPZ)
    return target / NPZ


def load(path: Path | None = None) -> dict[str, np.ndarray]:
    """The GE2E arrays (``lstm.weight_ih_l0`` ... ``linear.bias``), provisioning them on first use."""
    path = path or provision()
    if not Path(path).is_file():
        raise ModelError(f"speaker weights {path} are missing (run `make weights`)")
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    if arrays_sha256(arrays) != ARRAYS_SHA256:
        raise ModelError(f"speaker weights {path} are corrupt (sha256 of the arrays differs); delete it and "
                         "run `make weights`")
    return arrays


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
    return digest.hexdigest()

