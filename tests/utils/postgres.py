"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary directory.

``initdb`` refuses to run as root, so as root the cluster is made and run as ``nobody`` (in a directory
it owns); as anyone else, as that user. It listens on 127.0.0.1 on a free port and a socket in its own
directory; durability settings are off (the tests check the job queue's logic, not the disk's).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.utils.helpers import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin() -> Path | None:
    found = sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    return Path(found[-1]) if found and (Path(found[-1]) / "initdb").exists() else None


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="whisper-pg-"))
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self.log()}")

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh empty database on this server; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def start_or_skip() -> PostgresServer:
    import pytest

    bin_dir = find_bin()
    if bin_dir is None or shutil.which("pg_ctl", path=str(bin_dir)) is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make test installs it)")
    return PostgresServer(bin_dir).start()
