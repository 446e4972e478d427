"""Run the real tritonserver from the ``nvidia-pytriton`` wheel, without Docker, and supervise the stack.

    python -m whisper_triton.server triton   # Triton alone (make triton)
    python -m whisper_triton.server serve    # Triton + gateway, supervised (make serve)

The wheel ships the tritonserver binary, the Python backend and a stub per Python version. They are
copied into one backend directory (``build/backends/python``); the venv's ``bin`` goes first on PATH so
the stub's embedded interpreter finds the venv's packages, and ``nvidia_pytriton.libs`` goes on
LD_LIBRARY_PATH so the copied stub finds its libraries.

Every setting is an environment variable (see ``ServeSettings``). Ctrl-C (SIGINT) or SIGTERM stops
everything: each child runs in its own process group, which is signalled as a whole.

Triton's ports (HTTP, gRPC, metrics) are bound to ``TRITON_BIND_ADDRESS``, 127.0.0.1 by default: they have
no authentication, so only the gateway (on the same machine) should reach them. The models are served from
a repository of just the ``WHISPER_MODELS`` (links to their folders) with model control off, so nobody can
load or unload a model through Triton's API; ``TRITON_MODEL_CONTROL=explicit`` turns it on.

The supervisor restarts a tritonserver that exits, whose model-instance stub dies, or that stops answering
(``/v2/health/live`` unanswered for ``TRITON_STUCK_S``: stopped, deadlocked, swapped out).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class ServeSettings:
    """Environment variables read by ``make serve`` / ``make triton``."""

    repository: Path = field(default_factory=lambda: Path(os.environ.get("MODEL_REPOSITORY", ROOT / "model_repository")))
    models: list[str] = field(default_factory=lambda: [m for m in os.environ.get("WHISPER_MODELS", "whisper,whisper-tiny-en,speaker").split(",") if m])
    http_port: int = field(default_factory=lambda: _env_int("TRITON_HTTP_PORT", 8000))
    grpc_port: int = field(default_factory=lambda: _env_int("TRITON_GRPC_PORT", 8001))
    metrics_port: int = field(default_factory=lambda: _env_int("TRITON_METRICS_PORT", 8002))
    cache_mb: int = field(default_factory=lambda: _env_int("TRITON_CACHE_MB", 256))
    # Triton's ports have no authentication: only this machine by default ("0.0.0.0" opens them to the network).
    bind_address: str = field(default_factory=lambda: os.environ.get("TRITON_BIND_ADDRESS", "127.0.0.1"))
    # "explicit": the models can be loaded and unloaded through Triton's API (POST /v2/repository/...).
    model_control: bool = field(default_factory=lambda: os.environ.get("TRITON_MODEL_CONTROL", "none").lower() == "explicit")
    # A running tritonserver that does not answer /v2/health/live for this long is killed and restarted.
    stuck_after_s: float = field(default_factory=lambda: _env_float("TRITON_STUCK_S", 10.0))
    gateway_host: str = field(default_factory=lambda: os.environ.get("GATEWAY_HOST", "0.0.0.0"))
    gateway_port: int = field(default_factory=lambda: _env_int("GATEWAY_PORT", 8080))
    build_dir: Path = field(default_factory=lambda: Path(os.environ.get("WHISPER_TRITON_BUILD", ROOT / "build")))
    ready_timeout_s: float = field(default_factory=lambda: float(os.environ.get("TRITON_READY_TIMEOUT_S", 900)))


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


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent``: from each of its threads' ``children`` list (any thread
    may have started one), or, on a kernel without CONFIG_PROC_CHILDREN, by scanning /proc."""
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{parent}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:
            if (task / "stat").exists():  # the thread is there but the kernel has no children lists
                return _scan_children(parent)
        except (OSError, ValueError):
            continue  # the thread ended while we looked
    return sorted(found)


def _scan_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return sorted(found)


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


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return 0


class Child:
    """A subprocess in its own process group, so stopping it stops everything it started."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None = None):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)
        finally:
            if out:
                out.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.signal_group(signal.SIGKILL)  # whatever is left of the group (e.g. backend stubs)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """SIGKILL the main process only (fault-injection tests)."""
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait()


class TritonServer(Child):
    """tritonserver on ``bind_address`` (127.0.0.1: this machine only). ``models`` are served from a
    repository of just them with model control off, unless ``model_control`` (explicit mode, with the
    repository API that loads and unloads models)."""

    def __init__(self, repository: Path, http_port: int, grpc_port: int, metrics_port: int, models: list[str] | None = None,
                 cache_mb: int = 256, build_dir: Path = ROOT / "build", log_path: Path | None = None, extra_args: list[str] | None = None,
                 bind_address: str = "127.0.0.1", model_control: bool = False):
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.bind_address = bind_address
        backends = prepare_backends(Path(build_dir))
        triton = pytriton_dir()
        served = self.repository
        if models and not model_control:
            served = selected_repository(self.repository, models, Path(build_dir))
        argv = [
            str(triton / "bin" / "tritonserver"),
            f"--model-repository={served}",
            f"--backend-directory={backends}",
            f"--cache-directory={triton / 'caches'}",
            f"--cache-config=local,size={cache_mb * 1024 * 1024}",
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
        return _get(f"{self.http_url}/v2/health/ready") == 200

    def live(self, timeout: float = 2.0) -> bool:
        """The server answers ``/v2/health/live`` within ``timeout`` (a stopped or deadlocked one does not)."""
        return _get(f"{self.http_url}/v2/health/live", timeout) == 200

    def stub_pids(self) -> list[int]:
        """The Python-backend stub processes (one per model instance) that tritonserver started."""
        if not self.alive():
            return []
        children = child_pids(self.process.pid)
        found = []
        for pid in children:
            try:
                if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue  # the process ended while we looked
        return found

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


def gateway_child(settings: ServeSettings, log_path: Path | None = None) -> Child:
    env = dict(os.environ)
    env.setdefault("GATEWAY_TRITON_URL", f"127.0.0.1:{settings.grpc_port}")
    argv = [sys.executable, "-m", "gateway", "--host", settings.gateway_host, "--port", str(settings.gateway_port),
            "--log-level", "warning"]
    return Child("gateway", argv, env, log_path)


class Supervisor:
    """Keeps tritonserver (and the gateway) running; restarts a child that dies; stops all on a signal."""

    def __init__(self, settings: ServeSettings, with_gateway: bool):
        self.settings, self.with_gateway = settings, with_gateway
        self.stopping = False
        self.restarts = 0
        self.expected_stubs: int | None = None  # stub processes once ready; fewer later = an instance died
        self.triton = self._new_triton()
        self.gateway = gateway_child(settings) if with_gateway else None

    def _new_triton(self) -> TritonServer:
        s = self.settings
        self.last_live = None  # when the new server last answered /v2/health/live (None: not yet)
        return TritonServer(s.repository, s.http_port, s.grpc_port, s.metrics_port, s.models, s.cache_mb, s.build_dir,
                            bind_address=s.bind_address, model_control=s.model_control)

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        s = self.settings
        started = time.monotonic()
        print(f"starting tritonserver (models: {', '.join(s.models)}) ...", flush=True)
        self.triton.start()
        try:
            while not self.stopping and not self.triton.ready():
                if not self.triton.alive():
                    print("tritonserver exited during start-up; see the log above", file=sys.stderr)
                    return 1
                if time.monotonic() - started > s.ready_timeout_s:
                    print("tritonserver did not become ready in time", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            if self.stopping:
                return 0
            self.last_live = time.monotonic()  # ready answers: from now on, silence means stuck
            if self.gateway:
                self.gateway.start()
                while not self.stopping and _get(f"http://127.0.0.1:{s.gateway_port}/health") == 0:
                    if not self.gateway.alive():
                        print("the gateway exited during start-up", file=sys.stderr)
                        return 1
                    time.sleep(0.3)
            print(f"\nready in {time.monotonic() - started:.1f} s", flush=True)
            where = "this machine only" if s.bind_address.startswith("127.") else "OPEN to the network, no authentication"
            print(f"  Triton HTTP     http://{s.bind_address}:{s.http_port}/v2/health/ready  ({where}; model control "
                  f"{'ON' if s.model_control else 'off'})")
            print(f"  Triton gRPC     {s.bind_address}:{s.grpc_port}")
            print(f"  Triton metrics  http://{s.bind_address}:{s.metrics_port}/metrics")
            if self.gateway:
                print(f"  Gateway         http://localhost:{s.gateway_port}/  (API: /v1/audio/transcriptions, docs: /docs)")
            print("Press Ctrl-C to stop.", flush=True)
            self._watch()
            return 0
        finally:
            print("stopping ...", flush=True)
            if self.gateway:
                self.gateway.stop(10)
            self.triton.stop(30)
            print("stopped.", flush=True)

    def _watch(self) -> None:
        backoff = 1.0
        while not self.stopping:
            time.sleep(0.5)
            if not self.triton.alive() and not self.stopping:
                self.restarts += 1
                code = self.triton.process.returncode if self.triton.process else None
                print(f"tritonserver exited (code {code}); restart #{self.restarts} in {backoff:.0f} s", file=sys.stderr, flush=True)
                self.triton.stop(1)  # reap what is left of its process group (stubs)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self.triton = self._new_triton()
                self.expected_stubs = None
                self.triton.start()
            elif self._stuck():
                print(f"tritonserver (pid {self.triton.pid}) has not answered /v2/health/live for "
                      f"{time.monotonic() - self.last_live:.0f} s; killing it", file=sys.stderr, flush=True)
                self.triton.signal_group(signal.SIGKILL)  # SIGTERM would wait on a stopped process; the loop restarts it
                try:
                    self.triton.process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            elif self.triton.ready():
                backoff = 1.0
                self._check_stubs()
            if self.gateway and not self.gateway.alive() and not self.stopping:
                print("gateway exited; restarting", file=sys.stderr, flush=True)
                self.gateway = gateway_child(self.settings)
                self.gateway.start()


    def _stuck(self) -> bool:
        """Alive, answered /v2/health/live once, and not since ``stuck_after_s``."""
        if self.triton.live():
            self.last_live = time.monotonic()
            return False
        return self.last_live is not None and time.monotonic() - self.last_live > self.settings.stuck_after_s

    def _check_stubs(self) -> None:
        """A model instance whose stub process died fails every batch sent to it while Triton still reports
        ready, and Triton 2.51 does not restart the stub. So a missing stub restarts tritonserver."""
        stubs = len(self.triton.stub_pids())
        if self.expected_stubs is None:
            self.expected_stubs = stubs
        elif stubs < self.expected_stubs:
            print(f"a model instance's backend stub died ({stubs} of {self.expected_stubs} left); restarting tritonserver",
                  file=sys.stderr, flush=True)
            self.triton.stop(10)  # the loop sees it gone and restarts it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["serve", "triton", "backends"])
    args = parser.parse_args(argv)
    settings = ServeSettings()
    if args.command == "backends":
        print(prepare_backends(settings.build_dir))
        return 0
    return Supervisor(settings, with_gateway=args.command == "serve").run()


if __name__ == "__main__":
    raise SystemExit(main())
