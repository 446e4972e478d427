"""The real tritonserver from the ``nvidia-pytriton`` wheel, without Docker.

Its ports (HTTP, gRPC, metrics) are bound to ``bind_address``, 127.0.0.1 by default: they have no
authentication, so only the gateway (on the same machine) should reach them. The models are served from a
repository of just the chosen ones (links to their folders) with model control off, so nobody can load or
unload a model through Triton's API, unless ``model_control``.

The wheel ships the tritonserver binary, the Python backend and a stub per Python version. They are
copied into one backend directory (``build/backends/python``); the venv's ``bin`` goes first on PATH so
the stub's embedded interpreter finds the venv's packages, and ``nvidia_pytriton.libs`` goes on
LD_LIBRARY_PATH so the copied stub finds its libraries.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

from launcher.processes import Child, children_running, http_status
from launcher.settings import ROOT

STUB = b"triton_python_backend_stub"


def pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nvidia-pytriton is not installed: run `make venv` (it ships the tritonserver binary)")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def prepare_backends(build_dir: Path) -> Path:
    """Copy the Python backend and the stub for this interpreter into ``build_dir/backends/python``."""
    triton = pytriton_dir()
    stub = triton / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"no Python backend stub for Python {sys.version_info.major}.{sys.version_info.minor} in {stub.parent.parent}")
    target = build_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in [*sorted((triton / "backends" / "python").iterdir()), stub]:
        dest = target / source.name
        if source.is_file() and (not dest.exists() or dest.stat().st_size != source.stat().st_size):
            tmp = target / f".{source.name}.{os.getpid()}"
            shutil.copy2(source, tmp)
            os.replace(tmp, dest)
    return build_dir / "backends"


def selected_repository(repository: Path, models: list[str], build_dir: Path) -> Path:
    """A model repository holding only ``models``: links to their folders in ``repository``, under
    ``build_dir`` (Triton with model control off loads every model of its repository)."""
    names = sorted(set(models))
    if sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()) == names:
        return repository
    key = hashlib.sha1("\0".join([str(repository), *names]).encode()).hexdigest()[:12]
    target = build_dir / "repositories" / key
    if target.is_dir():
        return target
    tmp = build_dir / "repositories" / f".{key}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (repository / name / "config.pbtxt").is_file():
            raise SystemExit(f"no model {name!r} in {repository}")
        (tmp / name).symlink_to(repository / name, target_is_directory=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class TritonServer(Child):
    """tritonserver on ``bind_address`` (127.0.0.1: this machine only). ``models`` are served from a
    repository of just them with model control off, unless ``model_control`` (explicit mode, with the
    repository API that loads and unloads models)."""

    def __init__(self, repository: Path, http_port: int, grpc_port: int, metrics_port: int, models: list[str] | None = None,
                 build_dir: Path = ROOT / "build", log_path: Path | None = None, extra_args: list[str] | None = None,
                 bind_address: str = "127.0.0.1", model_control: bool = False):
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.bind_address = bind_address
        backends = prepare_backends(Path(build_dir))
        triton = pytriton_dir()
        served = self.repository
        if models and not model_control:
            served = selected_repository(self.repository, models, Path(build_dir))
        # No --cache-config: no model enables Triton's response cache (config.pbtxt says why).
        argv = [
            str(triton / "bin" / "tritonserver"),
            f"--model-repository={served}",
            f"--backend-directory={backends}",
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
            f"--http-address={bind_address}", f"--grpc-address={bind_address}", f"--metrics-address={bind_address}",
            "--allow-metrics=true", "--exit-timeout-secs=15", "--log-verbose=0",
        ]
        if model_control:
            argv.append("--model-control-mode=explicit")
            argv += [f"--load-model={m}" for m in models or []]
        argv += extra_args or []
        super().__init__("tritonserver", argv, self.environment(), log_path)

    @staticmethod
    def environment() -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        libs = pytriton_dir().parent.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        return env

    @property
    def _host(self) -> str:
        return "127.0.0.1" if self.bind_address in ("0.0.0.0", "::", "") else self.bind_address

    @property
    def http_url(self) -> str:
        return f"http://{self._host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host}:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        return http_status(f"{self.http_url}/v2/health/ready") == 200

    def live(self, timeout: float = 2.0) -> bool:
        """The server answers ``/v2/health/live`` within ``timeout`` (a stopped or deadlocked one does not)."""
        return http_status(f"{self.http_url}/v2/health/live", timeout) == 200

    def stub_pids(self) -> list[int]:
        """The Python-backend stub processes (one per model instance) that tritonserver started."""
        return children_running(self.process.pid, STUB) if self.alive() else []

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if not self.alive():
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode if self.process else '?'}{self._log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not Path(self.log_path).exists():
            return ""
        tail = Path(self.log_path).read_text(errors="replace").splitlines()[-lines:]
        return "\n--- tritonserver log (tail) ---\n" + "\n".join(tail)
