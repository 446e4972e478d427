"""The real tritonserver from the ``nvidia-pytriton`` wheel, without Docker.

The wheel ships the tritonserver binary, the Python backend and a stub per Python version. They are
copied into one backend directory (``build/backends/python``); the venv's ``bin`` goes first on PATH so
the stub's embedded interpreter finds the venv's packages, and ``nvidia_pytriton.libs`` goes on
LD_LIBRARY_PATH so the copied stub finds its libraries.
"""

from __future__ import annotations

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


class TritonServer(Child):
    def __init__(self, repository: Path, http_port: int, grpc_port: int, metrics_port: int, models: list[str] | None = None,
                 build_dir: Path = ROOT / "build", log_path: Path | None = None, extra_args: list[str] | None = None):
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        backends = prepare_backends(Path(build_dir))
        triton = pytriton_dir()
        # No --cache-config: no model enables Triton's response cache (config.pbtxt says why).
        argv = [
            str(triton / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
            "--allow-metrics=true", "--exit-timeout-secs=15", "--log-verbose=0",
        ]
        if models:
            argv.append("--model-control-mode=explicit")
            argv += [f"--load-model={m}" for m in models]
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
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        return http_status(f"{self.http_url}/v2/health/ready") == 200

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
