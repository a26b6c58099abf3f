"""Sessions: a namespace, and GPUs, kept on one worker between the cells of a ``--session``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from labrun.messages import CellOutcome, CellPayload, RunError
from labrun.models import RunStatus
from labrun.shipping import Packed

from .execution import execute
from .plugins import CellRuns, Devices, ServerLink
from .reporting import RunReporter
from .shell import Namespace

logger = logging.getLogger("labrun.executor")


class CellSession:
    """A namespace, and GPUs, kept on one worker between the cells of a ``--session``.

    Created as a Dask actor: the kernel calls :meth:`run` directly on the worker, without the
    scheduler. The session's GPUs leave the worker's advertised resources while it holds them,
    so Dask sends no other GPU task there; :meth:`release` (or the idle timeout) gives them back.
    """

    def __init__(self, name: str, key: str, gpus: int, idle_timeout: float) -> None:
        from distributed import get_worker

        self.name = name
        self.key = key
        self.worker = get_worker()
        self.link = ServerLink.of(self.worker)
        self.cells = CellRuns.of(self.worker)
        self.gpus = Devices.of(self.worker)
        self.reporter = RunReporter(self.link, key)
        self.started = time.time()
        self.holder = f"session:{key}"
        self.devices = self.gpus.allocate(self.holder, gpus)
        self.namespace = Namespace()
        self.idle_timeout = idle_timeout
        self.released = False
        self.last_used = time.monotonic()
        self.cells.cells[self.holder] = self.reporter
        if self.devices:
            self._advertise(-len(self.devices))
        self.reporter.report_start(self.started, self.devices)
        self._idle = threading.Thread(target=self._watch_idle, daemon=True)
        self._idle.start()

    def _advertise(self, change: int) -> None:
        total = self.worker.state.total_resources.get("GPU", 0)
        self.worker.loop.add_callback(self.worker.set_resources, GPU=max(0, total + change))

    def _watch_idle(self) -> None:
        while not self.released:
            time.sleep(min(5.0, self.idle_timeout / 4))
            if not self.released and time.monotonic() - self.last_used > self.idle_timeout:
                logger.info(
                    "labrun: session %s was idle %.0f s; releasing", self.name, self.idle_timeout
                )
                self.release(f"idle for {self.idle_timeout:.0f} s")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "worker": self.worker.address,
            "devices": self.devices,
            "released": self.released,
            "names": sorted(k for k in self.namespace.ns if not k.startswith("_")),
        }

    def run(self, payload: CellPayload, inputs: dict[str, Packed]) -> dict[str, Any]:
        if self.released:
            return {
                "status": CellOutcome.error,
                "error": RunError.raised(
                    "SessionReleased",
                    f"session {self.name!r} was released; run the cell again to start a new one",
                    [],
                ),
                "events": [],
                "seq": 0,
            }
        self.last_used = time.monotonic()
        reporter = RunReporter(self.link, payload.key)
        try:
            return execute(payload, inputs, self.namespace, self.devices, reporter)
        finally:
            self.last_used = time.monotonic()

    def release(self, reason: str = "released") -> bool:
        if self.released:
            return False
        self.released = True
        self.namespace = Namespace()
        self.cells.cells.pop(self.holder, None)
        if self.devices:
            self.gpus.release(self.holder)
            self._advertise(len(self.devices))
        self.reporter.report_end([], RunStatus.completed)
        return True
