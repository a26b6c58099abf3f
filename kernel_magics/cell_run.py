"""Sending a ``%%mlrun`` cell: ship it to the pool, show its output, bring its values back.

The cell goes to Dask directly (the scheduler's address comes from the labrun server), so a
trivial cell costs about one Dask round trip. Recording the run (environment, inputs,
parameters, datasets) happens on a background thread while the cell travels
(:mod:`.recording`); the worker finds the run by the key the kernel chose.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from labrun import shipping
from labrun.client import Client
from labrun.delivery import CancelRunOp, UpdateRunOp
from labrun.errors import LabrunError, NotFound
from labrun.messages import CellOutcome, CellPayload, RunError, outcome_status
from labrun.models import RunStatus, UpdateRun
from labrun.records import CellRecord
from labrun.shipping import Packed, unpack_all

from .pool import Pool
from .sessions import SessionHandle

logger = logging.getLogger("labrun.magics")

_DONE = object()


class RemoteCellError(Exception):
    """The cell raised on the worker; shows the worker's traceback, not this kernel's.

    What the notebook sees is a subclass named as the worker's exception (and, where that
    type is a builtin or its module is loaded here, also an instance of it): nbclient,
    papermill and ``except ValueError`` see the error the cell raised. See
    :func:`remote_error`.
    """

    def __init__(self, run: CellRun, error: RunError) -> None:
        self.run = run
        self.ename = error.ename or "Error"
        self.evalue = error.evalue or ""
        self.remote_traceback: list[str] = list(error.traceback or [])
        super().__init__(f"{self.ename}: {self.evalue}")

    def _render_traceback_(self) -> list[str]:
        where = f" on {self.run.worker}" if self.run.worker else ""
        header = f"labrun: {self.run.label} raised {self.ename}{where}"
        return [header, *(self.remote_traceback or [f"{self.ename}: {self.evalue}"])]


_ERROR_TYPES: dict[tuple[str, type[BaseException] | None], type[RemoteCellError]] = {}


def remote_error(run: CellRun, error: RunError) -> RemoteCellError:
    """The exception to raise in the notebook for a cell that raised ``error`` remotely."""
    ename = error.ename or "Error"
    module = sys.modules.get(error.emodule or "builtins")
    original = getattr(module, ename, None) if module is not None and ename.isidentifier() else None
    if not (isinstance(original, type) and issubclass(original, Exception)):
        original = None
    cls = _ERROR_TYPES.get((ename, original))
    if cls is None:
        try:
            bases: tuple[type, ...] = (
                (RemoteCellError,) if original is None else (RemoteCellError, original)
            )
            cls = type(ename, bases, {"__module__": __name__})
        except TypeError:  # a type whose layout cannot mix with ours (OSError's)
            cls = type(ename, (RemoteCellError,), {"__module__": __name__})
        _ERROR_TYPES[(ename, original)] = cls
    return cls(run, error)


class CellRun:
    """One ``%%mlrun`` cell on the pool: its run, its output and, once done, its values.

    Returned by ``%%mlrun --no-wait`` (shown as a live widget); :meth:`result` waits and puts
    the cell's values into the notebook.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        key: str,
        label: str,
        namespace: dict[str, Any],
        session: SessionHandle | None = None,
    ) -> None:
        self.pool = pool
        self.key = key
        self.label = label
        self.namespace = namespace
        self.session = session
        self._run_id: int | None = None
        self.worker: str | None = None
        self.devices: list[int] = []
        self.status = "queued"
        self.values: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.created = threading.Event()
        self.events = pool.listen(key)
        self.shown = 0
        self.future: Any = None
        self._outcome: dict[str, Any] | None = None
        self._observers: list[Callable[[dict[str, Any]], None]] = []
        self._done = threading.Event()
        self._pumped = threading.Event()
        self._background = False
        # Whether it holds GPUs the scheduler of record granted (given back at its end).
        self.granted = False

    def __repr__(self) -> str:
        return f"<labrun.CellRun {self.label} {self.status}>"

    @property
    def run_id(self) -> int | None:
        """The run's number (it is recorded in the background: this waits for that)."""
        self.created.wait(30)
        return self._run_id

    @run_id.setter
    def run_id(self, value: int) -> None:
        self._run_id = value
        self.created.set()

    # --- sending -------------------------------------------------------------------

    def recorded(self, run_id: int) -> None:
        """The run was created on the server (the outbox says so)."""
        self.run_id = run_id

    def send(self, payload: CellPayload, packed: dict[str, Packed], *, priority: int) -> None:
        """Start the cell's task (on its session, if any); its end wakes whoever waits (or
        the widget's thread)."""
        if self.session is not None:
            self.future = self.session.actor.run(payload, packed)
        else:
            # The task function Dask pickles by reference: the one thing the kernel imports
            # from the executor, and only once it sends a cell.
            from labrun.executor.tasks import run_cell

            self.future = self.pool.dask.submit(
                run_cell,
                payload,
                packed,
                resources={"GPU": payload.gpus} if payload.gpus else None,
                priority=priority,
                pure=False,
                key=f"labrun-cell-{self.key}",
            )
        if hasattr(self.future, "add_done_callback"):
            self.future.add_done_callback(lambda _: self.events.put(_DONE))
        else:  # an actor's future: no callbacks, so a thread waits on it
            threading.Thread(target=self._wait_actor, daemon=True).start()

    def _wait_actor(self) -> None:
        with contextlib.suppress(Exception):
            self.future.result()
        self.events.put(_DONE)

    # --- receiving -----------------------------------------------------------------

    def observe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._observers.append(callback)

    def _handle(self, event: dict[str, Any], show: Callable[[dict[str, Any]], None]) -> None:
        if event["seq"] <= self.shown:
            return
        self.shown = event["seq"]
        if event["kind"] == "started":
            self.worker = event.get("worker")
            self.devices = list(event.get("devices") or [])
            self.status = "running"
        show(event)
        for observer in self._observers:
            observer(event)

    def pump(
        self, show: Callable[[dict[str, Any]], None], timeout: float | None = None
    ) -> dict[str, Any]:
        """Show events until the task ends; its result. Raises TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                raise TimeoutError from None
            if event is _DONE:
                break
            self._handle(event, show)
        try:
            outcome = self.future.result()
        except CancelledError:  # dropped from the pool by a cancel (ours or the server's)
            outcome = {"status": CellOutcome.cancelled, "error": RunError.raised("Cancelled", "")}
        except Exception as err:  # noqa: BLE001 - any task failure becomes the run's error
            lost = RunError.raised(type(err).__name__, str(err))
            outcome = {"status": CellOutcome.lost, "error": lost}
        # Let the pool forget the task: while a future lives, the scheduler and the worker
        # keep the task with its inputs (100 MB of shipped array made the next cells 3x
        # slower), and the kernel keeps every cell's handle.
        self.future = None
        self.give_back()
        if outcome.get("record"):
            self._record_end(outcome["record"])
        for event in outcome.get("events") or []:
            self._handle(event, show)
        self.pool.forget(self.key)
        return outcome

    def settle(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """Put the values into the notebook, or raise the cell's error."""
        self._outcome = outcome
        status = outcome.get("status")
        if status == CellOutcome.ok:
            values, failed = unpack_all(outcome.get("outputs") or {})
            failed.update(outcome.get("unshippable") or {})
            self.namespace.update(values)
            self.values = values
            if self.session is not None:
                self.session.returned.update(values)
            self.status = "completed"
            self._done.set()
            if failed:
                lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
                where = (
                    f"they stay in session {self.session.name!r} on the worker"
                    if self.session
                    else "return something picklable, or use --session to keep them remote"
                )
                print(
                    f"labrun: {self.label}: these values did not come back ({where}):\n{lines}",
                    file=sys.stderr,
                )
            return values
        error: RunError = outcome.get("error") or RunError(type="Error", message="")
        self.status = outcome_status(status or CellOutcome.error).value
        if status == CellOutcome.cancelled:
            self.error = KeyboardInterrupt(f"{self.label} was cancelled")
        elif status == CellOutcome.lost:
            self.error = LabrunError(f"{self.label} failed on the pool: {error.message}")
            self._record_failure(error)
        else:
            self.error = remote_error(self, error)
        self._done.set()
        raise self.error

    def _record_end(self, record: dict[str, Any]) -> None:
        """How a short cell ended, as its worker handed it over (after the run's create).

        One request: the status with its log, which the server appends only if the run
        takes that status now (a cancel or the server's own settling may have come first).
        """
        update = CellRecord.model_validate(record).update()
        self.pool.bookkeeper.submit(UpdateRunOp(run_key=self.key, body=update))

    def _record_failure(self, error: RunError) -> None:
        update = UpdateRun(status=RunStatus.failed, error=error.record())
        self.pool.bookkeeper.submit(UpdateRunOp(run_key=self.key, body=update))

    def give_back(self) -> None:
        """The cell ended (or never went): its grant's GPUs go back to the pool."""
        if self.granted:
            self.granted = False
            self.pool.grants.release(self.key)

    def cancel(self) -> None:
        """Stop the cell: interrupt it on its worker, drop it from the queue, record it."""
        self.give_back()
        self.pool.stop(self.key)
        with contextlib.suppress(Exception):
            if hasattr(self.future, "cancel") and self.session is None:
                self.future.cancel()
        self.pool.bookkeeper.submit(CancelRunOp(run_key=self.key))
        self.status = "cancelled"

    # --- for the user --------------------------------------------------------------------

    def follow_in_background(self, show: Callable[[dict[str, Any]], None]) -> None:
        """Receive the cell's events on a thread (``--no-wait``); :meth:`result` settles."""
        self._background = True

        def follow() -> None:
            outcome = self.pump(show)
            self.status = outcome_status(outcome["status"]).value
            self._outcome = outcome
            self._pumped.set()
            for observer in self._observers:
                observer({"kind": "ended", "seq": self.shown, "status": self.status})

        threading.Thread(target=follow, name=f"labrun-follow-{self.key[:8]}", daemon=True).start()

    def done(self) -> bool:
        return self._done.is_set() or self._pumped.is_set()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the cell, put its values into the notebook and return them."""
        if self._done.is_set():
            if self.error is not None:
                raise self.error
            return dict(self.values or {})
        if self._background:
            deadline = None if timeout is None else time.monotonic() + timeout
            with interruptible(self):
                # Short waits, so the kernel's interrupt gets through.
                while not self._pumped.wait(0.1):
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"{self.label} is still {self.status}")
        else:
            with interruptible(self):
                self._outcome = self.pump(show_event, timeout)
        assert self._outcome is not None
        return self.settle(self._outcome)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        from .widgets import run_widget

        display(run_widget(self))


def show_event(event: dict[str, Any]) -> None:
    """Show one of a cell's events in the running cell's output, as the kernel would."""
    from IPython.display import clear_output, publish_display_data

    kind = event["kind"]
    if kind == "stream":
        stream = sys.stderr if event.get("name") == "stderr" else sys.stdout
        stream.write(event.get("text", ""))
    elif kind in {"display", "result"}:
        stream_flush()
        publish_display_data(
            event.get("data") or {},
            metadata=event.get("metadata") or {},
            transient=event.get("transient") or None,
            update=bool(event.get("update")),
        )
    elif kind == "clear":
        clear_output(wait=bool(event.get("wait")))


def stream_flush() -> None:
    # Keep the order of text and rich output as the cell produced it.
    sys.stdout.flush()
    sys.stderr.flush()


@contextlib.contextmanager
def interruptible(run: CellRun) -> Iterator[None]:
    """Ctrl-C (the kernel's interrupt) while waiting cancels the remote run."""
    try:
        yield
    except KeyboardInterrupt:
        run.cancel()
        print(f"labrun: {run.label} cancelled", file=sys.stderr)
        raise


def ship_inputs(values: dict[str, Any]) -> dict[str, Packed]:
    """The values a cell reads, packed for the worker; a LabrunError names any that cannot go."""
    packed, failed = shipping.ship(values, local_roots=[str(Path.cwd())])
    if failed:
        lines = "\n".join(f"  {name} ({why})" for name, why in failed.items())
        raise LabrunError(
            f"cannot send these values to the pool:\n{lines}\n"
            "Create them inside the cell instead, pass what they are built from, or keep "
            "them in a --session so they never leave the worker."
        )
    return packed


def local_cuda() -> bool:
    """Whether this kernel can take CUDA tensors back."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def stored_values(client: Client, run_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The values a cell run left on the server (a rerun stores them as outputs.pkl), and
    those that could not be rebuilt here (why)."""
    import cloudpickle

    try:
        run = client.get_run(run_id)
    except NotFound:
        raise LabrunError(f"there is no run {run_id}; `labrun runs` lists them") from None
    if not run.status.finished:
        raise LabrunError(
            f"run {run_id} is {run.status.value}; fetch its values once it has finished "
            f"(`labrun logs {run_id} --follow` shows it run)"
        )
    try:
        blob = client.download_artifact(run_id, "outputs.pkl")
    except NotFound:
        raise LabrunError(
            f"run {run_id} has no stored values: a cell's values live only with the kernel "
            f"that ran it (and outlive neither it nor a restart), unless the run is a "
            f"`labrun rerun`; `labrun show {run_id}` has its log"
        ) from None
    return shipping.unpack_all(cloudpickle.loads(blob)["values"])
