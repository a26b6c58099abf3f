"""Recording a ``%%mlrun`` cell's run from the kernel: off the cell's path, through the outbox.

The kernel's records (the run's create, its inputs, datasets, how a short cell ended) go in
the process's :class:`~labrun.delivery.Outbox`, which batches, retries, spools and flushes;
:class:`Bookkeeper` only decides when they may go.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labrun import environment, shipping
from labrun.client import Client
from labrun.datahash import ContentHash, hash_path
from labrun.delivery import ArtifactOp, CreateRunOp, LinkDatasetOp, Outbox
from labrun.models import (
    CreateDatasetVersion,
    CreateRun,
    DescribeDatasetVersion,
    DescribeRun,
    LinkDataset,
    RunKind,
    RunStatus,
)


class Bookkeeper:
    """When the kernel's records go out: they travel in the process's :class:`Outbox`, in
    order, and are held while a short cell's round trip is in flight.

    On a small machine the kernel, the server and the pool share the cores, and cells run
    back to back ("Run All") would otherwise each pay for the previous cell's record.
    """

    # A record is sent once no cell has been in flight for this long,
    QUIET = 0.03
    # or once the cell in flight has taken this long (the kernel only waits for it),
    LONG_CELL = 0.25
    # and never later than this after it was put.
    MAX_DEFER = 2.0

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0
        self._last_end = 0.0
        outbox.hold = self.hold

    def submit(self, item: Any, on_sent: Callable[[Any], None] | None = None) -> int:
        """Queue an operation, or a function that makes operations once the hold is over."""
        return self.outbox.put(item, on_sent)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """While a cell's round trip is in flight."""
        with self._lock:
            if self._in_flight == 0:
                self._busy_since = time.monotonic()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_end = time.monotonic()
            self.outbox.wake()

    def hold(self, submitted: float) -> float:
        """Seconds a record put at ``submitted`` waits still (the outbox asks)."""
        now = time.monotonic()
        with self._lock:
            if self._in_flight:
                left = self.LONG_CELL - (now - self._busy_since)
            else:
                left = self.QUIET - (now - self._last_end)
        return min(left, self.MAX_DEFER - (now - submitted))

    def wait(self, timeout: float | None = 30.0) -> bool:
        """Until everything submitted so far reached the server."""
        return self.outbox.flush(timeout)


def record_cell(
    bookkeeper: Bookkeeper,
    key: str,
    fields: dict[str, Any],
    *,
    capturer: environment.Capturer,
    namespace: dict[str, Any],
    packed: dict[str, Any],
    returns: list[str],
    pool_client: str,
    datasets: dict[str, str],
    max_inputs: int,
    created: Callable[[int], None],
) -> None:
    """Create a cell's run and store its inputs from the outbox's thread, off the cell's path.

    ``fields`` are the run's (:class:`~labrun.models.CreateRun`) but its notebook and
    environment, which are captured then; ``created`` gets the run's id once it is made.
    """

    def make() -> list[Any]:
        import cloudpickle

        # The outbox makes these after the cell (or 0.25 s into a long one): a short
        # cell is over before its run is recorded, and the worker waits for the record.
        try:
            captured = capturer.capture(namespace)
        except Exception as err:  # noqa: BLE001 - a partial record beats none
            captured = {**environment.basic(), "capture_error": f"{type(err).__name__}: {err}"}
        captured["inputs"] = shipping.digests(packed)
        captured["outputs"] = list(returns)  # what a `labrun rerun` keeps
        # The kernel's Dask client: while it is connected, the kernel records this cell
        # itself; once it is gone, the server settles the run from what the worker kept.
        captured["pool_client"] = pool_client
        body = CreateRun(
            key=key,
            kind=RunKind.cell,
            status=RunStatus.queued,
            notebook=captured.get("notebook"),
            environment=captured,
            **fields,
        )
        ops: list[Any] = [CreateRunOp(body=body)]
        ops += [
            LinkDatasetOp(run_key=key, body=LinkDataset(dataset=name, version=version))
            for name, version in datasets.items()
        ]
        # Arrays count by their size, so a large one is never pickled just to be skipped.
        raw = sum(int(getattr(v, "nbytes", 0)) for kind, v in packed.values() if kind == "raw")
        if packed and raw <= max_inputs:
            blob = cloudpickle.dumps({"values": packed}, protocol=5)
            if len(blob) <= max_inputs:
                ops.append(
                    ArtifactOp(run_key=key, name="inputs.pkl", data=blob, artifact_kind="inputs")
                )
        return ops

    def sent(answer: Any) -> None:
        if isinstance(answer, DescribeRun):
            created(answer.id)

    bookkeeper.submit(make, on_sent=sent)


def record_dataset(
    client: Client, name: str, path: Path, version: str | None
) -> tuple[ContentHash, DescribeDatasetVersion]:
    """Hash the data at ``path`` and record it as a version of dataset ``name`` (which must
    be ``version`` when given)."""
    digest = hash_path(path)
    recorded = client.add_dataset_version(
        name,
        CreateDatasetVersion(
            content_hash=digest.content_hash,
            size=digest.size,
            file_count=digest.file_count,
            source_path=str(path.resolve()),
            manifest=digest.manifest,
            version=version,
        ),
    )
    return digest, recorded
