"""The cell runner: a notebook cell sent by ``%%mlrun``, executed in an IPython shell on a worker.

A cell runs inside the worker process, in one :class:`WorkerShell` per process, so magics,
``display()``, rich outputs and matplotlib figures work as they do in a notebook, and a trivial
cell costs little more than a Dask task. Each cell gets a fresh namespace holding the values the
kernel shipped; a session (:class:`CellSession`, a Dask actor) keeps one namespace, and its GPUs,
across cells.

Output goes back to the kernel as it happens, as Dask events on the kernel's own topic
(``worker.log_event``): stream text in batches every 50 ms, display data, and a ``started``
event naming the worker. The task's result repeats the events, so the kernel shows everything
even when the last events arrive after the result.

The run's bookkeeping stays off the cell's path: the kernel creates the run with a key while the
task is on its way, and a reporter thread here finds the run by that key, then records the
worker, the log, the metrics the cell logged and how it ended.

``labrun rerun`` of a cell run comes back as a job from the dispatcher (:func:`run_cell_job`):
the same source and the inputs the kernel stored, with no kernel listening, so the log goes
to the run as it is written and the values the cell assigns are kept as ``outputs.pkl``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import cloudpickle
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from labrun import tracking
from labrun.delivery import AppendLogsOp, ArtifactOp, Outbox, UpdateRunOp
from labrun.errors import Conflict, LabrunError, NotFound
from labrun.models import ClaimRun, LogEntryIn, RunStatus, UpdateRun
from labrun.records import CellRecord
from labrun.shipping import Packed, pack_all, unpack_all

if TYPE_CHECKING:
    from distributed import Worker

    from .plugin import LabrunWorkerPlugin

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

# --- the shell ------------------------------------------------------------------------


class _Publisher(DisplayPublisher):
    """``display()`` inside a cell: the data goes to the kernel as an event."""

    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        execution = CellExecution.current()
        if execution is not None:
            execution.emit(
                "display",
                data=_jsonable(data),
                metadata=_jsonable(metadata or {}),
                transient=transient or {},
                update=update,
            )

    def clear_output(self, wait: bool = False) -> None:
        execution = CellExecution.current()
        if execution is not None:
            execution.emit("clear", wait=wait)


class _ResultHook(DisplayHook):
    """The value of a cell's last expression, sent like Jupyter's ``execute_result``."""

    def start_displayhook(self) -> None:
        pass

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        execution = CellExecution.current()
        if execution is not None:
            execution.emit("result", data=_jsonable(format_dict), metadata=_jsonable(md_dict or {}))

    def finish_displayhook(self) -> None:
        pass


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    # Dask events travel as msgpack: keep text and JSON-like values, drop the rest.
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool | dict | list)}


class WorkerShell(InteractiveShell):
    """An IPython shell without a terminal: tracebacks and outputs go to the running cell."""

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        execution = CellExecution.current()
        if execution is None:
            return super()._showtraceback(etype, evalue, stb)
        execution.error = {
            "ename": getattr(etype, "__name__", str(etype)),
            "emodule": getattr(etype, "__module__", None),
            "evalue": str(evalue),
            "traceback": list(stb),
        }
        return None


_shell: WorkerShell | None = None
_shell_lock = threading.Lock()
# One cell at a time per process: sys.stdout, the display hook and the shell's namespace are
# process-wide. The default pool has one worker process per GPU, so cells do not queue here.
_exec_lock = threading.Lock()


def shell() -> WorkerShell:
    """This process's shell, made on first use."""
    global _shell
    with _shell_lock:
        if _shell is None:
            home = tempfile.mkdtemp(prefix="labrun-ipython-")
            config = Config()
            config.HistoryManager.enabled = False
            config.InteractiveShell.colors = "Linux"
            # The singleton: display() and get_ipython() look for it.
            created = WorkerShell.instance(
                config=config,
                ipython_dir=home,
                display_pub_class=_Publisher,
                displayhook_class=_ResultHook,
            )
            # Every representation (HTML, images, ...) goes to the notebook, as ipykernel does;
            # a plain shell would keep only text.
            formatter = created.display_formatter
            assert formatter is not None
            formatter.active_types = formatter.format_types
            # Figures go to the kernel as images, the way a notebook shows them.
            os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            _text_progress_bars()
            try:
                created.extension_manager.load_extension("labrun")  # type: ignore[union-attr]
            except Exception:
                # The cell still runs; only our magics are missing in it.
                logger.exception("labrun: could not load the labrun magics into the worker shell")
            _shell = created
        return _shell


def _text_progress_bars() -> None:
    """``tqdm.notebook`` as the text bar on the worker.

    Its widget's model would live here, where no notebook's front end can reach it, so
    nothing would update; the text bar's output streams to the notebook and redraws in
    place, as ``tqdm`` and ``tqdm.auto`` already do here.
    """
    if importlib.util.find_spec("tqdm") is None:
        return
    import tqdm
    from tqdm import std

    text = types.ModuleType("tqdm.notebook", "tqdm.notebook, as text: cells run on a worker")
    text.__dict__.update(
        tqdm=std.tqdm, trange=std.trange, tqdm_notebook=std.tqdm, tnrange=std.trange
    )
    sys.modules["tqdm.notebook"] = text
    tqdm.notebook = text


class Namespace:
    """The globals a cell runs in: a module of its own, seen by the shell as ``__main__``."""

    def __init__(self) -> None:
        self.module = types.ModuleType("__main__")
        self.ns = self.module.__dict__
        self.ns["__builtins__"] = __builtins__
        self.primed = False

    @contextlib.contextmanager
    def active(self, sh: WorkerShell) -> Iterator[None]:
        saved = sh.user_module, sh.user_ns
        sh.user_module, sh.user_ns = self.module, self.ns
        if not self.primed:
            sh.init_user_ns()
            self.primed = True
        try:
            yield
        finally:
            sh.user_module, sh.user_ns = saved


def _flush_figures(sh: WorkerShell) -> None:
    """Show the figures a cell left open, as a notebook's inline backend does, then close them."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib import pyplot

    if not getattr(sh, "_labrun_figures", False):
        select_figure_formats(sh, {"png"})
        sh._labrun_figures = True  # type: ignore[attr-defined]
    from IPython.display import display

    for number in pyplot.get_fignums():
        display(pyplot.figure(number))
    pyplot.close("all")


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

    _current: ClassVar[CellExecution | None] = None
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
        self.error: dict[str, Any] | None = None
        self.stopped: str | None = None
        self.thread_id = threading.get_ident()
        self.started = time.time()
        self.announced = False
        self.finished = threading.Event()
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.log: list[LogEntryIn] = []

    @classmethod
    def current(cls) -> CellExecution | None:
        return cls._current

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
        CellExecution._current = self
        CellExecution.running[self.token] = self
        _ticker.watch(self)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            CellExecution._current = None
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


# --- reporting ------------------------------------------------------------------------


class RunReporter:
    """Records a cell's run from the worker, after the fact and off the cell's path.

    The kernel creates the run (with a key) while the cell travels here; the records go into
    this worker process's :class:`~labrun.delivery.Outbox` addressed by that key, which it
    resolves when it sends them. A short cell reports its start and end in one request once
    it is over; a longer one reports its start after REPORT_START_AFTER.
    """

    def __init__(self, plugin: LabrunWorkerPlugin, key: str, run_id: int | None = None) -> None:
        self.plugin = plugin
        self.key = key
        self._run_id = run_id
        self.start_reported = False

    @property
    def outbox(self) -> Outbox:
        return Outbox.of(self.plugin.client)

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
        client = self.plugin.client
        return tracking.Run(client, client.get_run(run_id), owned=False)

    def report_start(self, started: float, devices: list[int]) -> None:
        if self.start_reported:
            return
        self.start_reported = True
        update = UpdateRun(
            status=RunStatus.running,
            worker=self.plugin.id,
            devices=devices,
            started_at=datetime.fromtimestamp(started, timezone.utc),
        )
        self.outbox.put(UpdateRunOp(**self._target(), body=update))

    def append_log(self, entries: list[LogEntryIn]) -> None:
        self.outbox.put(AppendLogsOp(**self._target(), entries=entries))

    def report_end(
        self,
        log: list[LogEntryIn],
        status: RunStatus,
        error: dict[str, Any] | None = None,
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
                ArtifactOp(**self._target(), name=name, data=blob, artifact_kind="outputs")
            )
        update = UpdateRun(
            status=status,
            error=error,
            started_at=at,
            worker=self.plugin.id if at else None,
            devices=devices if at else None,
            log=log or None,
        )
        return self.outbox.put(UpdateRunOp(**self._target(), body=update))


# --- executing -------------------------------------------------------------------------


def execute(
    payload: dict[str, Any],
    inputs: dict[str, Packed],
    namespace: Namespace,
    devices: list[int],
    reporter: RunReporter | None,
) -> dict[str, Any]:
    """Run one cell in ``namespace``; the outputs, errors and events for the kernel."""
    from distributed import get_worker

    worker = get_worker()
    sh = shell()
    execution = CellExecution(worker, payload["token"], payload.get("topic"), devices, reporter)
    result: dict[str, Any] = {"worker": worker.address, "devices": devices}
    started = time.perf_counter()
    tracked: list[tracking.Run] = []

    def attach() -> tracking.Run:
        assert reporter is not None
        run = reporter.tracked_run()
        tracked.append(run)
        return run

    with _exec_lock:
        # Waiting for the lock is not the cell's time.
        execution.started = time.time()
        values, failed = unpack_all(inputs)
        if failed:
            result.update(status="error", error=_shipping_error(failed))
            execution.finished.set()
            return _finish(result, execution, reporter, None, started, payload)
        namespace.ns.update(values)
        if devices and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
        token = tracking.attach_lazily(attach) if reporter is not None else None
        try:
            with namespace.active(sh), execution.capturing():
                sh.run_cell(payload["source"], store_history=False, silent=False)
                _flush_figures(sh)
        finally:
            if token is not None:
                tracking.detach(token)
    if execution.stopped:
        result.update(status="cancelled", error={"ename": "Cancelled", "evalue": execution.stopped})
    elif execution.error is not None:
        result.update(status="error", error=execution.error)
    else:
        outputs, unshippable = _collect(namespace, payload)
        result.update(status="ok", outputs=outputs, unshippable=unshippable)
    return _finish(result, execution, reporter, tracked[0] if tracked else None, started, payload)


def _shipping_error(failed: dict[str, str]) -> dict[str, Any]:
    lines = [f"  {name}: {why}" for name, why in failed.items()]
    return {
        "ename": "ShippingError",
        "evalue": "these values could not be rebuilt on the worker:\n" + "\n".join(lines),
        "traceback": [],
    }


def _collect(
    namespace: Namespace, payload: dict[str, Any]
) -> tuple[dict[str, Packed], dict[str, str]]:
    """The names the kernel asked back, packed for it."""
    wanted: list[str] = payload.get("returns") or []
    present = {name: namespace.ns[name] for name in wanted if name in namespace.ns}
    packed, failed = pack_all(present, cuda=bool(payload.get("cuda")))
    if payload.get("explicit"):
        for name in wanted:
            if name not in namespace.ns:
                failed[name] = "the cell did not define it"
    return packed, failed


def _finish(
    result: dict[str, Any],
    execution: CellExecution,
    reporter: RunReporter | None,
    tracked: tracking.Run | None,
    started: float,
    payload: dict[str, Any],
) -> dict[str, Any]:
    result["elapsed"] = time.perf_counter() - started
    result["events"] = execution.events
    result["seq"] = execution.seq
    if reporter is not None:
        status = {
            "ok": RunStatus.completed,
            "cancelled": RunStatus.cancelled,
        }.get(result["status"], RunStatus.failed)
        error = result.get("error")
        record = None
        if error is not None:
            record = {
                "type": error.get("ename"),
                "message": f"{error.get('ename')}: {error.get('evalue')}",
                "ename": error.get("ename"),
                "evalue": error.get("evalue"),
                "traceback": error.get("traceback"),
            }
        artifacts = None
        if payload.get("store_outputs") and result.get("outputs"):
            artifacts = {"outputs.pkl": cloudpickle.dumps({"values": result["outputs"]}, 5)}
        if payload.get("topic") and not reporter.start_reported and tracked is None:
            # A short cell whose kernel waits for it: the kernel records the end right
            # after it creates the run, so this worker need not look the run up (polling
            # while the kernel's record is on its way) nor send anything.
            result["record"] = CellRecord(
                status=status,
                error=record,
                log=execution.log,
                started=execution.started,
                worker=reporter.plugin.id,
                devices=execution.devices,
            ).model_dump(mode="json")
            # Kept a while: should the kernel go away before it records this, the server
            # settles the run from here (see cell_outcomes).
            reporter.plugin.outcomes.keep(reporter.key, result["record"])
            return result
        reporter.report_end(
            execution.log,
            status,
            record,
            tracked,
            started=execution.started,
            devices=execution.devices,
            artifacts=artifacts,
        )
    return result


def run_cell(payload: dict[str, Any], inputs: dict[str, Packed]) -> dict[str, Any]:
    """The Dask task of a one-off ``%%mlrun`` cell."""
    from .plugin import get_plugin

    plugin = get_plugin()
    reporter = RunReporter(plugin, payload["key"], payload.get("run_id"))
    holder = f"cell:{payload['key']}"
    devices = plugin.devices.allocate(holder, int(payload.get("gpus") or 0))
    plugin.cells[holder] = reporter
    try:
        return execute(payload, inputs, Namespace(), devices, reporter)
    finally:
        plugin.cells.pop(holder, None)
        plugin.devices.release(holder)


# Seconds a rerun waits for its record to reach the server before its task ends.
RECORD_TIMEOUT = 60.0


def run_cell_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of a cell re-run from the server: claim, run, record. How it ended."""
    from .plugin import get_plugin
    from .runner import check_rerun

    plugin = get_plugin()
    run_id = spec["run_id"]
    cell = spec.get("cell") or {}
    key = f"rerun-{run_id}-{spec['attempt']}"
    devices = plugin.devices.allocate(run_id, int(spec.get("gpus") or 0))
    try:
        machine = plugin.job_environment(devices)
        try:
            plugin.client.claim_run(
                run_id,
                ClaimRun(
                    attempt=spec["attempt"], worker=plugin.id, devices=devices, environment=machine
                ),
            )
        except (Conflict, NotFound) as err:
            return {"run_id": run_id, "status": "superseded", "error": {"message": str(err)}}
        lines, error = check_rerun(plugin.client, spec, machine["packages"])
        if lines:
            plugin.client.append_logs(
                run_id,
                [LogEntryIn(stream="system", text=f"{line}\n") for line in lines],
                attempt=spec["attempt"],
            )
        if error is not None:
            plugin.client.update_run(run_id, UpdateRun(status=RunStatus.failed, error=error))
            return {"run_id": run_id, "status": "failed", "error": error}
        reporter = RunReporter(plugin, key, run_id)
        reporter.start_reported = True  # the claim recorded it
        plugin.cells[f"cell:{key}"] = reporter
        try:
            inputs: dict[str, Packed] = {}
            if cell.get("inputs"):
                stored = plugin.client.download_artifact(run_id, "inputs.pkl")
                inputs = cloudpickle.loads(stored)["values"]
            payload = {
                "token": key,
                "key": key,
                "topic": None,
                "source": spec["source"],
                "returns": cell.get("returns") or [],
                "store_outputs": True,
            }
            result = execute(payload, inputs, Namespace(), devices, reporter)
            # The task ends when the run's record is on the server, as a notebook job's does
            # (or, with the server away, when it waits in the worker's spool).
            reporter.outbox.flush(RECORD_TIMEOUT)
        finally:
            plugin.cells.pop(f"cell:{key}", None)
        status = {"ok": "completed", "cancelled": "cancelled"}.get(result["status"], "failed")
        return {"run_id": run_id, "status": status, "error": result.get("error")}
    finally:
        plugin.devices.release(run_id)


def cell_outcomes(keys: list[str], *, dask_worker: Any) -> dict[str, dict[str, Any]]:
    """Run on every worker by the server (``client.run``): how the cells ``keys`` ended here,
    for those whose kernel was waiting for them and went away before recording it."""
    from .plugin import get_plugin

    return get_plugin(dask_worker).outcomes.find(keys)


def stop_cell(token: str, reason: str = "interrupted", *, dask_worker: Any = None) -> bool:
    """Run on every worker by the kernel (``client.run``): stop the cell ``token`` if it is here."""
    execution = CellExecution.running.get(token)
    return execution.stop(reason) if execution is not None else False


# --- sessions --------------------------------------------------------------------------


class CellSession:
    """A namespace, and GPUs, kept on one worker between the cells of a ``--session``.

    Created as a Dask actor: the kernel calls :meth:`run` directly on the worker, without the
    scheduler. The session's GPUs leave the worker's advertised resources while it holds them,
    so Dask sends no other GPU task there; :meth:`release` (or the idle timeout) gives them back.
    """

    def __init__(self, name: str, key: str, gpus: int, idle_timeout: float) -> None:
        from distributed import get_worker

        from .plugin import get_plugin

        self.name = name
        self.key = key
        self.worker = get_worker()
        self.plugin = get_plugin(self.worker)
        self.reporter = RunReporter(self.plugin, key)
        self.started = time.time()
        self.holder = f"session:{key}"
        self.devices = self.plugin.devices.allocate(self.holder, gpus)
        self.namespace = Namespace()
        self.idle_timeout = idle_timeout
        self.released = False
        self.last_used = time.monotonic()
        self.plugin.cells[self.holder] = self.reporter
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

    def run(self, payload: dict[str, Any], inputs: dict[str, Packed]) -> dict[str, Any]:
        if self.released:
            return {
                "status": "error",
                "error": {
                    "ename": "SessionReleased",
                    "evalue": f"session {self.name!r} was released; run the cell again to start a new one",
                    "traceback": [],
                },
                "events": [],
                "seq": 0,
            }
        self.last_used = time.monotonic()
        reporter = RunReporter(self.plugin, payload["key"])
        try:
            return execute(payload, inputs, self.namespace, self.devices, reporter)
        finally:
            self.last_used = time.monotonic()

    def release(self, reason: str = "released") -> bool:
        if self.released:
            return False
        self.released = True
        self.namespace = Namespace()
        self.plugin.cells.pop(self.holder, None)
        if self.devices:
            self.plugin.devices.release(self.holder)
            self._advertise(len(self.devices))
        self.reporter.report_end([], RunStatus.completed)
        return True
