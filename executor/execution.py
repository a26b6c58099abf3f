"""Running one ``%%mlrun`` cell on a worker, and streaming what it shows as it happens.

A cell runs inside the worker process, in the process's IPython shell (:mod:`.shell`), so a
trivial cell costs little more than a Dask task. Each cell gets a fresh namespace holding the
values the kernel shipped; a session (:mod:`.sessions`) keeps one namespace across cells.

Output goes back to the kernel as it happens, as Dask events on the kernel's own topic
(``worker.log_event``): stream text in batches every 50 ms, display data, and a ``started``
event naming the worker. The task's result repeats the events, so the kernel shows everything
even when the last events arrive after the result.

The run's bookkeeping stays off the cell's path: the kernel creates the run with a key while the
task is on its way, and the cell's :class:`~.reporting.RunReporter` finds the run by that key,
then records the worker, the log, the metrics the cell logged and how it ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import cloudpickle

from labrun import tracking
from labrun.messages import CellOutcome, CellPayload, RunError, outcome_status
from labrun.models import LogEntryIn
from labrun.records import CellRecord
from labrun.shipping import Packed, pack_all, unpack_all

from .plugins import CellRuns
from .reporting import RunReporter
from .shell import Namespace, capture_into, exec_lock, flush_figures, shell

if TYPE_CHECKING:
    from distributed import Worker

logger = logging.getLogger("labrun.executor")

# How often buffered stream text goes to the kernel while a cell runs.
STREAM_INTERVAL = 0.05
# Event text kept for the task's result (the kernel shows what it did not get live).
RESULT_EVENTS_BUDGET = 4 * 2**20
# A cell still running after this many seconds has its start recorded at once; a shorter
# one's start goes with its end, in one request.
REPORT_START_AFTER = 0.5
# Seconds an interrupted cell has to stop before its worker process is restarted.
KILL_GRACE = 10.0

# --- one execution ----------------------------------------------------------------


class _Stream(io.TextIOBase):
    def __init__(self, execution: CellExecution, name: str) -> None:
        self.execution = execution
        self.name_ = name

    @property
    def name(self) -> str:
        return f"<labrun {self.name_}>"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self.execution.write(self.name_, text)
        return len(text)

    def flush(self) -> None:
        pass


class CellExecution:
    """One cell running on this worker: its events, its output and how to stop it."""

    running: ClassVar[dict[str, CellExecution]] = {}

    def __init__(
        self,
        worker: Worker,
        token: str,
        topic: str | None,
        devices: list[int],
        reporter: RunReporter | None,
    ) -> None:
        self.worker = worker
        self.token = token
        self.topic = topic
        self.devices = devices
        self.reporter = reporter
        self.seq = 0
        self.events: list[dict[str, Any]] = []
        self.events_size = 0
        self.error: RunError | None = None
        self.stopped: str | None = None
        self.thread_id = threading.get_ident()
        self.started = time.time()
        self.announced = False
        self.finished = threading.Event()
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.log: list[LogEntryIn] = []

    def emit(self, kind: str, **body: Any) -> None:
        with self._lock:
            self.seq += 1
            event = {"token": self.token, "seq": self.seq, "kind": kind, **body}
            size = sum(len(str(v)) for v in body.values())
            if self.events_size + size <= RESULT_EVENTS_BUDGET:
                self.events.append(event)
                self.events_size += size
        if self.topic is None:  # no kernel listens (a rerun from the server)
            return
        try:
            self.worker.log_event(self.topic, event)
        except TypeError:
            logger.warning(
                "labrun: dropped an output of cell %s that msgpack cannot carry", self.token
            )

    def announce(self) -> None:
        """Tell the kernel (and the run) where the cell runs: once it has run a moment.

        A trivial cell never needs this, so it costs it nothing.
        """
        if self.announced:
            return
        self.announced = True
        self.emit("started", worker=self.worker.address, devices=self.devices)

    def write(self, name: str, text: str) -> None:
        if text:
            with self._lock:
                self._pending.append((name, text))

    def flush_streams(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            self.announce()
        # Consecutive writes to one stream become one event.
        merged: list[tuple[str, str]] = []
        for name, text in pending:
            if merged and merged[-1][0] == name:
                merged[-1] = (name, merged[-1][1] + text)
            else:
                merged.append((name, text))
        entries = [LogEntryIn(stream=name, text=text) for name, text in merged]
        if self.topic is None and self.reporter is not None:
            # Nobody watches the cell: its run's log is where its output is followed.
            if entries:
                self.reporter.append_log(entries)
            return
        self.log.extend(entries)
        for entry in entries:
            self.emit("stream", name=entry.stream, text=entry.text)

    def raised(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        """The cell raised (the shell shows its traceback here)."""
        self.error = RunError.raised(
            getattr(etype, "__name__", str(etype)),
            str(evalue),
            stb,
            emodule=getattr(etype, "__module__", None),
        )

    def tick(self) -> None:
        """Every STREAM_INTERVAL while the cell runs (on the ticker thread)."""
        self.announce()
        self.flush_streams()
        if self.reporter is not None and time.time() - self.started > REPORT_START_AFTER:
            self.reporter.report_start(self.started, self.devices)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """While the cell runs: its stdout and stderr, displays and errors come here."""
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Stream(self, "stdout"), _Stream(self, "stderr")
        CellExecution.running[self.token] = self
        _ticker.watch(self)
        try:
            with capture_into(self):
                yield
        finally:
            sys.stdout, sys.stderr = saved
            _ticker.unwatch(self)
            self.finished.set()
            self.flush_streams()
            CellExecution.running.pop(self.token, None)

    def stop(self, reason: str) -> bool:
        """Interrupt the cell (KeyboardInterrupt in its thread); restart the worker if it hangs."""
        if self.finished.is_set():
            return False
        self.stopped = reason
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self.thread_id), ctypes.py_object(KeyboardInterrupt)
        )

        def kill_if_stuck() -> None:
            if not self.finished.wait(KILL_GRACE):
                # Stuck in native code that never returns to Python: the nanny starts a fresh
                # worker process, which frees the GPU for the next job.
                logger.error("labrun: cell %s did not stop; restarting this worker", self.token)
                os._exit(1)

        threading.Thread(target=kill_if_stuck, daemon=True).start()
        return True


class _Ticker:
    """One thread per process that flushes the running cells' output every STREAM_INTERVAL."""

    def __init__(self) -> None:
        self._watched: set[CellExecution] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, execution: CellExecution) -> None:
        with self._lock:
            self._watched.add(execution)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="labrun-cells", daemon=True)
                self._thread.start()
        self._wake.set()

    def unwatch(self, execution: CellExecution) -> None:
        with self._lock:
            self._watched.discard(execution)

    def _loop(self) -> None:
        while True:
            with self._lock:
                watched = list(self._watched)
            if not watched:
                self._wake.wait()
                self._wake.clear()
                continue
            time.sleep(STREAM_INTERVAL)
            for execution in watched:
                if not execution.finished.is_set():
                    try:
                        execution.tick()
                    except Exception:
                        logger.exception("labrun: streaming the output of a cell failed")


_ticker = _Ticker()


# --- executing -------------------------------------------------------------------------


def execute(
    payload: CellPayload,
    inputs: dict[str, Packed],
    namespace: Namespace,
    devices: list[int],
    reporter: RunReporter | None,
) -> dict[str, Any]:
    """Run one cell in ``namespace``; the outputs, errors and events for the kernel.

    The result's ``status`` is a :class:`~labrun.messages.CellOutcome`, its ``error`` a
    :class:`~labrun.messages.RunError`.
    """
    from distributed import get_worker

    worker = get_worker()
    sh = shell()
    execution = CellExecution(worker, payload.token, payload.topic, devices, reporter)
    result: dict[str, Any] = {"worker": worker.address, "devices": devices}
    started = time.perf_counter()
    tracked: list[tracking.Run] = []

    def attach() -> tracking.Run:
        assert reporter is not None
        run = reporter.tracked_run()
        tracked.append(run)
        return run

    with exec_lock:
        # Waiting for the lock is not the cell's time.
        execution.started = time.time()
        values, failed = unpack_all(inputs)
        if failed:
            result.update(status=CellOutcome.error, error=_shipping_error(failed))
            execution.finished.set()
            return _finish(result, execution, reporter, None, started, payload)
        namespace.ns.update(values)
        if devices and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
        token = tracking.attach_lazily(attach) if reporter is not None else None
        try:
            with namespace.active(sh), execution.capturing():
                sh.run_cell(payload.source, store_history=False, silent=False)
                flush_figures(sh)
        finally:
            if token is not None:
                tracking.detach(token)
    if execution.stopped:
        result.update(
            status=CellOutcome.cancelled, error=RunError.raised("Cancelled", execution.stopped)
        )
    elif execution.error is not None:
        result.update(status=CellOutcome.error, error=execution.error)
    else:
        outputs, unshippable = _collect(namespace, payload)
        result.update(status=CellOutcome.ok, outputs=outputs, unshippable=unshippable)
    return _finish(result, execution, reporter, tracked[0] if tracked else None, started, payload)


def _shipping_error(failed: dict[str, str]) -> RunError:
    lines = [f"  {name}: {why}" for name, why in failed.items()]
    evalue = "these values could not be rebuilt on the worker:\n" + "\n".join(lines)
    return RunError.raised("ShippingError", evalue, [])


def _collect(
    namespace: Namespace, payload: CellPayload
) -> tuple[dict[str, Packed], dict[str, str]]:
    """The names the kernel asked back, packed for it."""
    present = {name: namespace.ns[name] for name in payload.returns if name in namespace.ns}
    packed, failed = pack_all(present, cuda=payload.cuda)
    if payload.explicit:
        for name in payload.returns:
            if name not in namespace.ns:
                failed[name] = "the cell did not define it"
    return packed, failed


def _finish(
    result: dict[str, Any],
    execution: CellExecution,
    reporter: RunReporter | None,
    tracked: tracking.Run | None,
    started: float,
    payload: CellPayload,
) -> dict[str, Any]:
    result["elapsed"] = time.perf_counter() - started
    result["events"] = execution.events
    result["seq"] = execution.seq
    if reporter is not None:
        status = outcome_status(result["status"])
        error: RunError | None = result.get("error")
        artifacts = None
        if payload.store_outputs and result.get("outputs"):
            artifacts = {"outputs.pkl": cloudpickle.dumps({"values": result["outputs"]}, 5)}
        if payload.topic and not reporter.start_reported and tracked is None:
            # A short cell whose kernel waits for it: the kernel records the end right
            # after it creates the run, so this worker need not look the run up (polling
            # while the kernel's record is on its way) nor send anything.
            result["record"] = CellRecord(
                status=status,
                error=error.record() if error is not None else None,
                log=execution.log,
                started=execution.started,
                worker=reporter.link.id,
                devices=execution.devices,
            ).model_dump(mode="json")
            # Kept a while: should the kernel go away before it records this, the server
            # settles the run from here (see tasks.cell_outcomes).
            CellRuns.of(execution.worker).outcomes.keep(reporter.key, result["record"])
            return result
        reporter.report_end(
            execution.log,
            status,
            error,
            tracked,
            started=execution.started,
            devices=execution.devices,
            artifacts=artifacts,
        )
    return result
