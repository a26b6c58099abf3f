"""How a ``%%mlrun`` cell ended, as its worker hands it over.

The worker gives it to the kernel that waits for the cell, and keeps a copy; the kernel
records it on the cell's run, or, should the kernel go away first, the server does from the
worker's copy. One shape, and one way to turn it into the run's update, for all three.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from labrun.models import LogEntryIn, RunStatus, UpdateRun


class CellRecord(BaseModel):
    status: RunStatus
    error: dict[str, Any] | None = None
    log: list[LogEntryIn] = []
    started: float  # seconds since the epoch, when the cell began on the worker
    worker: str
    devices: list[int] = []

    def update(self) -> UpdateRun:
        """The run's start and end in one change, its log appended with the end."""
        return UpdateRun(
            status=self.status,
            error=self.error,
            started_at=datetime.fromtimestamp(self.started, timezone.utc),
            worker=self.worker,
            devices=self.devices,
            log=self.log or None,
        )
