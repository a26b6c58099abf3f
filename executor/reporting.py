"""How a ``%%mlrun`` cell's run is recorded from the worker: after the fact, off its path.

The kernel creates the run (with a key) while the cell travels to the worker; the records go
into this worker process's :class:`~labrun.delivery.Outbox` addressed by that key, which it
resolves when it sends them. The outbox batches, retries, spools and flushes: nothing here
sends by itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from labrun import tracking
from labrun.delivery import AppendLogsOp, ArtifactOp, Outbox, UpdateRunOp
from labrun.errors import LabrunError
from labrun.messages import RunError
from labrun.models import LogEntryIn, RunStatus, UpdateRun

from .plugins import ServerLink


class RunReporter:
    """Records a cell's run from the worker.

    A short cell reports its start and end in one request once it is over; a longer one
    reports its start after :data:`labrun.executor.execution.REPORT_START_AFTER`.
    """

    def __init__(
        self, link: ServerLink, key: str, run_id: int | None = None, attempt: int | None = None
    ) -> None:
        self.link = link
        self.key = key
        self._run_id = run_id
        # The dispatched attempt (a cell re-run from the server): its records say so.
        self.attempt = attempt
        self.start_reported = False

    @property
    def outbox(self) -> Outbox:
        return Outbox.of(self.link.client)

    @property
    def run_id(self) -> int | None:
        """The run's id once known here (it is known once a record of it was sent)."""
        return self._run_id if self._run_id is not None else self.outbox.known_id(self.key)

    def _target(self) -> dict[str, Any]:
        return {"run_id": self._run_id} if self._run_id is not None else {"run_key": self.key}

    def resolve(self, timeout: float = 30.0) -> int | None:
        """The run's id, waiting for the kernel's create to land."""
        if self.run_id is None:
            self._run_id = self.outbox.resolve(self.key, timeout)
        return self.run_id

    def tracked_run(self) -> tracking.Run:
        """The run ``labrun.log`` inside the cell writes to (resolved when first used)."""
        run_id = self.resolve()
        if run_id is None:
            raise LabrunError(f"the run of this cell (key {self.key}) was never created")
        client = self.link.client
        return tracking.Run(client, client.get_run(run_id), owned=False)

    def report_start(self, started: float, devices: list[int]) -> None:
        if self.start_reported:
            return
        self.start_reported = True
        update = UpdateRun(
            status=RunStatus.running,
            worker=self.link.id,
            devices=devices,
            started_at=datetime.fromtimestamp(started, timezone.utc),
            attempt=self.attempt,
        )
        self.outbox.put(UpdateRunOp(**self._target(), body=update))

    def append_log(self, entries: list[LogEntryIn]) -> None:
        self.outbox.put(AppendLogsOp(**self._target(), entries=entries, attempt=self.attempt))

    def report_end(
        self,
        log: list[LogEntryIn],
        status: RunStatus,
        error: RunError | None = None,
        run: tracking.Run | None = None,
        *,
        started: float | None = None,
        devices: list[int] | None = None,
        artifacts: dict[str, bytes] | None = None,
    ) -> int:
        """Queue the cell's end (after its metric points); the number to flush to."""
        at = None
        if not self.start_reported and started is not None:
            at = datetime.fromtimestamp(started, timezone.utc)
        if run is not None:
            run._sender.push()  # its points go before the end
        for name, blob in (artifacts or {}).items():
            self.outbox.put(
                ArtifactOp(
                    **self._target(),
                    name=name,
                    data=blob,
                    artifact_kind="outputs",
                    attempt=self.attempt,
                )
            )
        update = UpdateRun(
            status=status,
            error=error.record() if error is not None else None,
            started_at=at,
            worker=self.link.id if at else None,
            devices=devices if at else None,
            log=log or None,
            attempt=self.attempt,
        )
        return self.outbox.put(UpdateRunOp(**self._target(), body=update))
