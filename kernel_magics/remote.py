"""The kernel's side of ``%%mlrun``: ship a cell to the pool, show its output, bring values back.

The cell goes to Dask directly (the scheduler's address comes from the labrun server), so a
trivial cell costs about one Dask round trip. Recording the run (environment, inputs,
parameters, datasets) happens on a background thread while the cell travels; the worker
finds the run by the key the kernel chose.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

from labrun import environment
from labrun.client import Client
from labrun.delivery import CancelRunOp, Outbox, UpdateRunOp
from labrun.errors import LabrunError
from labrun.executor.cells import CellSession, stop_cell
from labrun.models import CreateRun, PoolStatus, RunKind, RunStatus, UpdateRun
from labrun.records import CellRecord
from labrun.shipping import unpack_all

logger = logging.getLogger("labrun.magics")

_DONE = object()


class RemoteCellError(Exception):
    """The cell raised on the worker; shows the worker's traceback, not this kernel's.

    What the notebook sees is a subclass named as the worker's exception (and, where that
    type is a builtin or its module is loaded here, also an instance of it): nbclient,
    papermill and ``except ValueError`` see the error the cell raised. See
    :func:`remote_error`.
    """

    def __init__(self, run: CellRun, error: dict[str, Any]) -> None:
        self.run = run
        self.ename = error.get("ename") or "Error"
        self.evalue = error.get("evalue") or ""
        self.remote_traceback: list[str] = list(error.get("traceback") or [])
        super().__init__(f"{self.ename}: {self.evalue}")

    def _render_traceback_(self) -> list[str]:
        where = f" on {self.run.worker}" if self.run.worker else ""
        header = f"labrun: {self.run.label} raised {self.ename}{where}"
        return [header, *(self.remote_traceback or [f"{self.ename}: {self.evalue}"])]


_ERROR_TYPES: dict[tuple[str, type[BaseException] | None], type[RemoteCellError]] = {}


def remote_error(run: CellRun, error: dict[str, Any]) -> RemoteCellError:
    """The exception to raise in the notebook for a cell that raised ``error`` remotely."""
    ename = str(error.get("ename") or "Error")
    module = sys.modules.get(str(error.get("emodule") or "builtins"))
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


# How long a first cell waits for a pool the server is still starting (a local pool takes
# a few seconds; a team's scheduler may take longer to answer).
POOL_START_TIMEOUT = 120.0


def wait_until_started(client: Client, timeout: float = POOL_START_TIMEOUT) -> PoolStatus:
    """The pool's status once it is no longer starting, or when ``timeout`` ran out.

    A notebook opened right after ``jupyter lab`` starts would otherwise fail its first
    ``%%mlrun`` cell on a pool that is ready seconds later.
    """
    status = client.pool()
    if status.state != "starting":
        return status
    print("labrun: waiting for the pool to start...", flush=True)
    deadline = time.monotonic() + timeout
    while status.state == "starting" and time.monotonic() < deadline:
        # A cell waits here only while the pool's first worker starts, seconds at most:
        # a short wait hands it over sooner, and each poll is a cheap request.
        time.sleep(0.1)
        status = client.pool()
    return status


class Pool:
    """This kernel's connection to the labrun server and the pool's Dask scheduler."""

    def __init__(self, client: Client) -> None:
        from distributed import Client as DaskClient

        self.client = client
        status = wait_until_started(client)
        if status.state != "ready" or not status.scheduler:
            raise LabrunError(
                f"the pool is {status.state}"
                + (f": {status.message}" if status.message else "")
                + "; `labrun pool` shows it, and the server's log says why"
            )
        self.scheduler = status.scheduler
        try:
            # Direct to workers: a session's actor is called on its worker, not through the
            # scheduler, and results come straight from the worker that holds them.
            self.dask = DaskClient(
                status.scheduler, set_as_default=False, timeout="10s", direct_to_workers=True
            )
        except OSError as err:
            raise LabrunError(
                f"cannot reach the pool's Dask scheduler at {status.scheduler}: {err}; is the "
                "kernel on a machine that can reach it?"
            ) from None
        self.topic = f"labrun-cell-{uuid.uuid4().hex}"
        self._routes: dict[str, queue.SimpleQueue[Any]] = {}
        self.dask.subscribe_topic(self.topic, self._route)
        self.has_gpus = any(w.gpus for w in status.workers)
        self.bookkeeper = Bookkeeper(Outbox.of(client))

    def _route(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        route = self._routes.get(msg.get("token", ""))
        if route is not None:
            route.put(msg)

    def listen(self, token: str) -> queue.SimpleQueue[Any]:
        route: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._routes[token] = route
        return route

    def forget(self, token: str) -> None:
        self._routes.pop(token, None)

    def stop(self, token: str) -> None:
        """Interrupt the cell ``token`` wherever it runs."""
        with contextlib.suppress(Exception):
            self.dask.run(stop_cell, token, on_error="ignore")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dask.close()


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

    def send(self, submit: Callable[[], Any]) -> None:
        """Start the task; its end wakes whoever waits (or the widget's thread)."""
        self.future = submit()
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
            outcome = {"status": "cancelled", "error": {"ename": "Cancelled", "evalue": ""}}
        except Exception as err:  # noqa: BLE001 - any task failure becomes the run's error
            outcome = {"status": "lost", "error": {"ename": type(err).__name__, "evalue": str(err)}}
        # Let the pool forget the task: while a future lives, the scheduler and the worker
        # keep the task with its inputs (100 MB of shipped array made the next cells 3x
        # slower), and the kernel keeps every cell's handle.
        self.future = None
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
        if status == "ok":
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
        error = outcome.get("error") or {}
        if status == "cancelled":
            self.status = "cancelled"
            self.error = KeyboardInterrupt(f"{self.label} was cancelled")
        elif status == "lost":
            self.status = "failed"
            self.error = LabrunError(
                f"{self.label} failed on the pool: {error.get('ename')}: {error.get('evalue')}"
            )
            self._record_failure(error)
        else:
            self.status = "failed"
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

    def _record_failure(self, error: dict[str, Any]) -> None:
        message = f"{error.get('ename')}: {error.get('evalue')}"
        update = UpdateRun(status=RunStatus.failed, error={"message": message, **error})
        self.pool.bookkeeper.submit(UpdateRunOp(run_key=self.key, body=update))

    def cancel(self) -> None:
        """Stop the cell: interrupt it on its worker, drop it from the queue, record it."""
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
            self.status = {"ok": "completed", "cancelled": "cancelled"}.get(
                outcome.get("status", ""), "failed"
            )
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


class SessionHandle:
    """A ``--session``: a :class:`CellSession` actor on one worker, with its run."""

    def __init__(self, name: str, future: Any, actor: Any, run_id: int, key: str) -> None:
        self.name = name
        self.future = future
        self.actor = actor
        self.run_id = run_id
        self.key = key
        # What came back from the session, to tell the notebook's own changes from its copies.
        self.returned: dict[str, Any] = {}
        info = actor.describe().result()
        self.worker: str = info["worker"]
        self.devices: list[int] = info["devices"]

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.actor.release("released by the notebook").result(timeout=30)
        with contextlib.suppress(Exception):
            self.future.release()


def start_session(
    pool: Pool, name: str, *, gpus: int, project: str, idle_timeout: float, priority: int
) -> SessionHandle:
    key = uuid.uuid4().hex
    run = pool.client.create_run(
        CreateRun(
            key=key,
            project=project,
            name=f"session {name}",
            kind=RunKind.session,
            status=RunStatus.queued,
            requested_gpus=gpus,
            environment=environment.basic(),
        )
    )
    future = pool.dask.submit(
        CellSession,
        name,
        key,
        gpus,
        idle_timeout,
        actor=True,
        resources={"GPU": gpus} if gpus else None,
        priority=priority,
        pure=False,
        key=f"labrun-session-{key}",
    )
    announced = False
    while True:
        try:
            # The actor handle binds to the current client: ours is not the default one.
            with pool.dask.as_current():
                actor = future.result(timeout=2)
            break
        except TimeoutError:
            if not announced:
                print(
                    f"labrun: waiting for a worker with {gpus} free GPU(s) for session {name!r}..."
                )
                announced = True
        except KeyboardInterrupt:
            future.cancel()
            with contextlib.suppress(LabrunError):
                pool.client.cancel_run(run.id)
            raise
    return SessionHandle(name, future, actor, run.id, key)


@contextlib.contextmanager
def interruptible(run: CellRun) -> Iterator[None]:
    """Ctrl-C (the kernel's interrupt) while waiting cancels the remote run."""
    try:
        yield
    except KeyboardInterrupt:
        run.cancel()
        print(f"labrun: {run.label} cancelled", file=sys.stderr)
        raise
