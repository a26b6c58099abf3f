"""Sends metric points in the background, in bulk, and never loses one.

``labrun.log`` only appends to an in-memory buffer. A thread sends what has accumulated
every ``interval`` seconds (sooner when a batch fills) as one request per batch. Each
batch carries an id, so a batch sent again after a timeout is stored once. When the
server cannot be reached, batches go to a spool file (JSON lines) and are sent, in order,
once it answers again; spool files left by a process that ended are sent by the next one.

The server refuses a batch whole when one of its points is bad (or when it is too large):
the sender then sends each half on its own, down to the one point that is refused, which
is dropped with a warning that says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from labrun.client import Client, _pid_alive
from labrun.errors import InvalidRequest, LabrunError, NotFound, PayloadTooLarge, ServerUnavailable

log = logging.getLogger("labrun")

# One point: (key, value, step, time).
Point = tuple[str, float | None, int, float]


def encode_batch(batch_id: str, points: list[Point]) -> bytes:
    """The ``LogMetrics`` JSON of a batch in its compact ``rows`` form: the hot path.

    NaN and infinities go as the JSON constants ``NaN``, ``Infinity`` and ``-Infinity``,
    which the server reads (and stores as such).
    """
    return json.dumps({"batch_id": batch_id, "rows": points}).encode()


def send_batch(client: Client, run_id: int, batch_id: str, points: list[Point]) -> int:
    """Send one batch; when the server refuses it, send its halves, and so on down to the
    points it refuses, which are dropped with a warning. Returns the points stored.

    The halves' ids derive from the batch's, so a batch sent again after a timeout splits
    into the same halves, each stored once.
    """
    try:
        client.post_metrics_json(run_id, encode_batch(batch_id, points))
    except (InvalidRequest, PayloadTooLarge) as err:
        if len(points) == 1:
            log.warning("labrun: the server refused a metric point of run %d: %s", run_id, err)
            return 0
        half = len(points) // 2
        return send_batch(client, run_id, _half_id(batch_id, 0), points[:half]) + send_batch(
            client, run_id, _half_id(batch_id, 1), points[half:]
        )
    return len(points)


def _half_id(batch_id: str, half: int) -> str:
    return hashlib.blake2b(f"{batch_id}/{half}".encode(), digest_size=16).hexdigest()


class Spool:
    """Batches waiting for the server, one JSON line each: ``{"run_id", "batch_id", "points"}``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._lock = threading.Lock()

    def append(self, run_id: int, batch_id: str, points: list[Point]) -> None:
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"run_id": run_id, "batch_id": batch_id, "points": points})
            with self.path.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def pending(self) -> bool:
        return self.path.exists()

    def orphans(self) -> Iterator[Path]:
        """Spool files of processes that have ended."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.jsonl")):
            pid = path.name.split("-", 1)[0]
            if path != self.path and pid.isdigit() and not _pid_alive(int(pid)):
                yield path

    def count(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open() as f:
            return sum(len(json.loads(line)["points"]) for line in f if line.strip())


def drain(client: Client, path: Path) -> int:
    """Send the batches of one spool file in order; keep what could not be sent.

    Returns the number of points sent. Raises ServerUnavailable when the server is still
    away (the file then holds exactly the batches not yet sent).
    """
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return 0
    sent = 0
    for i, line in enumerate(lines):
        batch = json.loads(line)
        points = [tuple(p) for p in batch["points"]]
        try:
            send_batch(client, batch["run_id"], batch["batch_id"], points)
        except ServerUnavailable:
            rest = path.with_suffix(".tmp")
            rest.write_text("\n".join(lines[i:]) + "\n")
            os.replace(rest, path)
            raise
        except NotFound:
            log.warning(
                "labrun: dropping %d spooled points of a run the server no longer has", len(points)
            )
        sent += len(points)
    path.unlink(missing_ok=True)
    return sent


class MetricSender:
    """The background sender of one run's metric points."""

    def __init__(
        self,
        client: Client,
        run_id: int,
        *,
        spool_dir: Path,
        interval: float = 0.5,
        batch_size: int = 10_000,
        retry_interval: float = 2.0,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.interval = interval
        self.batch_size = batch_size
        self.retry_interval = retry_interval
        self.spool = Spool(spool_dir)
        self.sent = 0
        self._buffer: list[Point] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._offline_since: float | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"labrun-metrics-{run_id}", daemon=True
        )
        self._thread.start()

    def add(self, points: list[Point]) -> None:
        with self._lock:
            self._buffer.extend(points)
            self._idle.clear()
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    @property
    def offline(self) -> bool:
        return self._offline_since is not None

    def _loop(self) -> None:
        self._send_orphans()
        while True:
            self._wake.wait(self.retry_interval if self.offline else self.interval)
            self._wake.clear()
            closing = self._closing
            self._flush()
            if closing:
                return

    def _send_orphans(self) -> None:
        for path in self.spool.orphans():
            try:
                drain(self.client, path)
            except ServerUnavailable:
                return
            except LabrunError as err:
                log.warning("labrun: could not send spool file %s: %s", path, err)

    def _flush(self) -> None:
        if self.spool.pending():
            try:
                self.sent += drain(self.client, self.spool.path)
                if self._offline_since is not None:
                    log.info("labrun: server is back; spooled points sent")
                self._offline_since = None
            except ServerUnavailable:
                pass
        with self._lock:
            batch, self._buffer = self._buffer, []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            batch_id = uuid.uuid4().hex
            if self.offline:
                self.spool.append(self.run_id, batch_id, chunk)
                continue
            try:
                send_batch(self.client, self.run_id, batch_id, chunk)
                self.sent += len(chunk)
            except ServerUnavailable as err:
                # Keep the batch (with its id: if the server did store it, the retry is
                # recognised) and send it when the server answers again.
                self._offline_since = time.monotonic()
                log.warning("labrun: %s; keeping metric points in %s", err.message, self.spool.path)
                self.spool.append(self.run_id, batch_id, chunk)
        with self._lock:
            if not self._buffer and not self.spool.pending():
                self._idle.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every point logged so far is sent; False if some remain spooled."""
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self, timeout: float = 30.0) -> int:
        """Send what is left (waiting up to ``timeout`` for the server); return points still spooled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.flush(min(1.0, self.retry_interval)):
            self._offline_since = None  # try the server again now
        self._closing = True
        self._wake.set()
        self._thread.join(max(0.1, deadline - time.monotonic()))
        return self.spool.count()
