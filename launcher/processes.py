"""Child processes, each in its own process group (stopping one stops everything it started), and the
children of a process, found from ``/proc`` by PID (never by matching command lines machine-wide)."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path


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


def command_line(pid: int) -> bytes:
    """The process's command line (NUL-separated), or b"" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children_running(parent: int, program: bytes) -> list[int]:
    """The children of ``parent`` whose command line holds ``program``."""
    return [pid for pid in child_pids(parent) if program in command_line(pid)]


def http_status(url: str, timeout: float = 2.0) -> int:
    """The HTTP status of a GET, or 0 when nothing answered."""
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
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                            start_new_session=True)
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
