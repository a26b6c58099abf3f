"""The spool: operations waiting for the server, in a file that outlives the process."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
from pydantic import BaseModel

from labrun.client import Client

from .ops import OPERATION, ArtifactOp, MetricsOp


class Spool:
    """Operations waiting for the server: a header line naming it, then one op per line.

    The file is this process's; artifacts' bytes sit in files beside it. The header holds
    the server's URL and the token, so the next process sends each file to its own server
    as its own user (the file is readable by this user alone).
    """

    def __init__(self, directory: Path, client: Client, path: Path | None = None) -> None:
        self.directory = directory
        self.client = client
        self.path = path or directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.lock = threading.Lock()

    def pending(self) -> bool:
        return self.path.exists()

    def append(self, ops: list[BaseModel]) -> None:
        with self.lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                if new:
                    header = {"labrun_spool": 1, "url": self.client.url, "token": self.client.token}
                    f.write(json.dumps(header) + "\n")
                for op in ops:
                    f.write(self._line(op) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _line(self, op: BaseModel) -> str:
        if isinstance(op, MetricsOp):  # the common case, kept cheap
            return json.dumps(
                {
                    "kind": "metrics",
                    "run_id": op.run_id,
                    "run_key": op.run_key,
                    "batch_id": op.batch_id,
                    "rows": op.rows,
                }
            )
        if isinstance(op, ArtifactOp) and op.blob is None:
            blob = uuid.uuid4().hex[:8]
            self._blob(blob).write_bytes(op.data)
            op = op.model_copy(update={"blob": blob})
        return op.model_dump_json()

    def _blob(self, blob: str) -> Path:
        # Named after the spool file, so a claimed orphan takes its blobs along.
        return self.path.with_name(f"{self.path.stem}-{blob}.bin")

    def read(self) -> list[BaseModel]:
        """The operations in the file, in order (the header skipped)."""
        with self.lock:
            lines = self.path.read_text().splitlines()[1:]
        ops: list[BaseModel] = []
        for line in lines:
            if line.strip():
                op = OPERATION.validate_json(line)
                if isinstance(op, ArtifactOp) and op.blob:
                    op.data = self._blob(op.blob).read_bytes()
                ops.append(op)
        return ops

    def sent(self, count: int) -> None:
        """Drop the first ``count`` operations (sent), keeping those after them: also any
        appended since they were read. The file goes once it holds none."""
        with self.lock:
            header, *lines = self.path.read_text().splitlines()
            lines = [line for line in lines if line.strip()]
            for line in lines[:count]:
                if '"artifact"' in line:  # its bytes are in a file of their own
                    blob = OPERATION.validate_json(line)
                    if isinstance(blob, ArtifactOp) and blob.blob:
                        self._blob(blob.blob).unlink(missing_ok=True)
            rest = lines[count:]
            if not rest:
                self.path.unlink(missing_ok=True)
                return
            partial = self.path.with_suffix(".tmp")
            partial.write_text(header + "\n" + "".join(line + "\n" for line in rest))
            os.replace(partial, self.path)

    def count_points(self) -> int:
        if not self.path.exists():
            return 0
        return sum(len(op.rows) for op in self.read() if isinstance(op, MetricsOp))

    @classmethod
    def orphans(cls, directory: Path) -> Iterator[Spool]:
        """Spool files of processes that have ended, each claimed by renaming it, so that
        two processes starting at once never send one file twice."""
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.jsonl")):
            pid = path.name.split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or psutil.pid_exists(int(pid)):
                continue
            claimed = path.with_name(f"{os.getpid()}-{path.name.split('-', 1)[1]}")
            try:
                os.rename(path, claimed)
                for blob in directory.glob(f"{path.stem}-*.bin"):
                    os.rename(blob, blob.with_name(claimed.stem + blob.name[len(path.stem) :]))
                header = json.loads(claimed.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue  # another process claimed it first, or it is not a spool file
            yield cls(directory, Client(header["url"], header.get("token", "")), claimed)
