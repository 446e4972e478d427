"""The supervisor's stub watchdog finds a process's children from its threads' ``children`` lists."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from launcher.processes import _scan_children, child_pids

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def test_children_started_from_any_thread_are_found_and_match_a_full_scan():
    procs: list[subprocess.Popen] = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    procs.append(subprocess.Popen(sleeper))
    worker = threading.Thread(target=lambda: procs.append(subprocess.Popen(sleeper)))
    worker.start()
    worker.join()
    try:
        mine = {p.pid for p in procs}
        found = child_pids(os.getpid())
        assert mine <= set(found)
        assert set(found) == set(_scan_children(os.getpid()))  # the same answer as a scan of /proc
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert not {p.pid for p in procs} & set(child_pids(os.getpid()))


def test_a_process_that_is_gone_has_no_children():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert child_pids(proc.pid) == []
