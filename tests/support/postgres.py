"""A throwaway PostgreSQL cluster, started from the installed Debian binaries."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A PostgreSQL cluster listening on 127.0.0.1 (and on a Unix socket in its folder).

    ``wrap`` prefixes the commands that start it and create its databases: with
    ``ip netns exec NS`` it runs in a network namespace, and only that namespace reaches it
    (no Unix socket then, which every namespace of the machine could open).
    """

    def __init__(self, bindir: Path, wrap: Sequence[str] = ()) -> None:
        self.bindir = bindir
        self.wrap = list(wrap)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="labrun-pg-"))
        self._names = itertools.count()

    @classmethod
    def find(cls, wrap: Sequence[str] = ()) -> PostgresServer | None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.insert(0, str(Path(on_path).resolve().parent))
        for bindir in candidates:
            if (Path(bindir) / "initdb").exists():
                return cls(Path(bindir), wrap)
        return None

    def _run(self, *args: str, wrapped: bool = False) -> None:
        # initdb refuses to run as root: run the cluster as the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        command = [*(self.wrap if wrapped else []), *prefix, *args]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "labrun",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        sockets = "''" if self.wrap else str(self.dir)
        options = f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "log"),
            "-o",
            options,
            "-w",
            "start",
            wrapped=True,
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://labrun@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        if self.wrap:  # reachable from its namespace only
            createdb = str(self.bindir / "createdb")
            self._run(createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "labrun", name,
                      wrapped=True)  # fmt: skip
            return self.url(name)
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=labrun dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
