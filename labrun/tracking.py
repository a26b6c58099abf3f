"""The public tracking API: ``labrun.init``, ``log``, ``log_params``, ``log_artifact``, ``finish``."""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from typing_extensions import Self

from labrun import environment, settings
from labrun.client import Client
from labrun.delivery import Outbox, Point, UpdateRunOp
from labrun.errors import InvalidRequest
from labrun.models import CreateRun, DescribeRun, RunKind, RunStatus, UpdateRun
from labrun.sender import MetricSender

logger = logging.getLogger("labrun")

_current: Run | None = None
# Set while a %%mlrun cell runs on a worker: makes the cell's run on first use.
_lazy: Callable[[], Run] | None = None
# Re-entrant: init() finishes the previous run while holding it.
_current_lock = threading.RLock()


def _number(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):  # float("nan") would take it: refuse as the server does
        raise InvalidRequest(
            f"metric {key!r} must be a number, got {type(value).__name__} {value!r}; "
            "log float('nan') for NaN, and record text with labrun.log_params"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"metric {key!r} must be a number, got {type(value).__name__} {value!r}; "
            "record text with labrun.log_params"
        ) from None
    return number


def _notebook_namespace() -> dict[str, Any] | None:
    """The user namespace when this runs in an IPython kernel (never imports IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell.user_ns if shell is not None else None


class Run:
    """A tracked run: metrics, parameters and artifacts go to it until :meth:`finish`.

    Usually made by :func:`labrun.init`; usable as a context manager, which finishes the
    run as ``failed`` when the block raises.
    """

    def __init__(self, client: Client, described: DescribeRun, *, owned: bool) -> None:
        self.client = client
        self.id = described.id
        self.info = described
        # A run this process created is finished by it; a job's run is finished by the job.
        self._owned = owned
        self._step = 0
        self._finished = False
        self._outbox = Outbox.of(client)
        self._sender = MetricSender(self._outbox, self.id)

    def __repr__(self) -> str:
        return f"<labrun.Run {self.id} {self.info.name or ''} at {self.client.url}>"

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metric values at ``step`` (default: one more than the last call's).

        Returns at once: points are sent in the background, in bulk.
        """
        if step is None:
            step = self._step
        self._step = step + 1
        now = time.time()
        points: list[Point] = [(str(k), _number(k, v), step, now) for k, v in metrics.items()]
        self._sender.add(points)

    def log_params(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Record hyperparameters (merged with those recorded before)."""
        merged = {**(params or {}), **kwargs}
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in merged.items()
        }
        return self.client.log_params(self.id, clean)

    def log_artifact(
        self, path: str | os.PathLike[str], name: str | None = None, *, kind: str = "file"
    ) -> None:
        """Upload a file (or every file under a folder) as an artifact of the run.

        A folder's files are those whose real path lies inside it: a link to a file
        outside the folder is skipped, with a warning that names it.
        """
        source = Path(path)
        if not source.exists():
            raise InvalidRequest(f"cannot log artifact {str(path)!r}: no such file or folder")
        if source.is_dir():
            prefix = name or source.name
            root = source.resolve()
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                real = file.resolve()
                if not real.is_relative_to(root):
                    logger.warning(
                        "labrun: skipped %s: it links to %s, outside the folder %s",
                        file,
                        real,
                        source,
                    )
                    continue
                rel = file.relative_to(source).as_posix()
                # The real path, checked above: not the link, which could change meanwhile.
                self.client.upload_artifact(
                    self.id, f"{prefix}/{rel}", real.read_bytes(), kind=kind
                )
        else:
            self.client.upload_artifact(
                self.id, name or source.name, source.read_bytes(), kind=kind
            )

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the points logged so far reached the server (False if some still wait)."""
        return self._sender.flush(timeout)

    def finish(
        self,
        status: str = "completed",
        *,
        error: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Send what is left and mark the run finished (``completed`` or ``failed``).

        Waits up to ``timeout`` seconds for the server. What it could not deliver by then
        (points, and the final status) is kept in a spool file, said in a warning, and sent
        by the next labrun process on this machine.
        """
        global _current
        if self._finished:
            return
        self._finished = True
        self._sender.close()
        if self._owned:
            # Through the outbox, after the points: delivered, or spooled with them.
            update = UpdateRun(status=RunStatus(status), error=error)
            self._outbox.put(UpdateRunOp(run_id=self.id, body=update))
        if not self._outbox.flush(timeout):
            spool = self._outbox.spool
            logger.warning(
                "labrun: the server at %s did not take run %d's last records within %.0f s; "
                "%d metric points%s wait in %s and are sent the next time labrun runs on "
                "this machine",
                self.client.url,
                self.id,
                timeout,
                spool.count_points(),
                f" and its {status!r} status" if self._owned else "",
                spool.path,
            )
        refused = self._outbox.refused.get(self.id)
        if refused:
            logger.warning(
                "labrun: %d metric point(s) of run %d were refused by the server and not "
                "stored (the warnings above name them)",
                refused,
                self.id,
            )
        with _current_lock:
            if _current is self:
                _current = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish("completed")
        else:
            self.finish("failed", error={"type": type(exc).__name__, "message": str(exc)})


def init(
    project: str | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    tags: list[str] | None = None,
    client: Client | None = None,
) -> Run:
    """Start a tracked run, or attach to the job's run inside a labrun job.

    Parameters
    ----------
    project:
        The project the run belongs to (default ``$LABRUN_PROJECT`` or ``"default"``).
    name:
        A name to find the run by.
    params:
        Hyperparameters to record now (more with :func:`log_params`).
    tags:
        Free-form labels.
    client:
        The server connection (default: found from ``LABRUN_SERVER_URL`` or the running
        Jupyter servers).

    Returns
    -------
    Run
        Also the current run that :func:`log` and friends use.
    """
    global _current
    with _current_lock:
        if _current is not None and not _current._finished:
            _current.finish()
        client = client or Client()
        job_run = os.environ.get(settings.RUN_ID)
        if job_run:
            run = Run(client, client.get_run(int(job_run)), owned=False)
            if params:
                run.log_params(params)
        else:
            namespace = _notebook_namespace()
            captured = environment.capture(namespace)
            described = client.create_run(
                CreateRun(
                    project=project or os.environ.get(settings.PROJECT) or "default",
                    name=name,
                    # In a notebook, the session itself is the run.
                    kind=RunKind.session if namespace is not None else RunKind.script,
                    params=dict(params or {}),
                    tags=tags or [],
                    notebook=captured.get("notebook"),
                    environment=captured,
                )
            )
            run = Run(client, described, owned=True)
        _current = run
    return run


def attach_lazily(factory: Callable[[], Run]) -> object:
    """Make ``factory()`` the current run when something first asks for it (a remote cell).

    Returns a token for :func:`detach`.
    """
    global _lazy, _current
    with _current_lock:
        _lazy, _current = factory, None
    return factory


def detach(token: object) -> None:
    """Undo :func:`attach_lazily` (the run, if made, is left for its owner to finish)."""
    global _lazy, _current
    with _current_lock:
        if _lazy is token:
            _lazy, _current = None, None


def current_run() -> Run:
    """The current run; inside a labrun job, the job's run even without ``init``."""
    global _current
    if _current is None or _current._finished:
        if _lazy is not None:
            with _current_lock:
                if _current is None and _lazy is not None:
                    _current = _lazy()
                return _current
        if os.environ.get(settings.RUN_ID):
            return init()
        raise InvalidRequest("no current run: call labrun.init() first")
    return _current


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Record metric values on the current run (see :meth:`Run.log`)."""
    current_run().log(metrics, step)


def log_params(params: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Record hyperparameters on the current run."""
    return current_run().log_params(params, **kwargs)


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> None:
    """Upload a file or folder as an artifact of the current run."""
    current_run().log_artifact(path, name)


def flush(timeout: float | None = 30.0) -> bool:
    """Wait until the current run's logged points reached the server (True when they did)."""
    run = _current
    return run.flush(timeout) if run is not None and not run._finished else True


def finish(status: str = "completed") -> None:
    """Finish the current run (nothing happens without one)."""
    if _current is not None:
        _current.finish(status)


@atexit.register
def _finish_at_exit() -> None:
    # A script that never calls finish() still sends its last points.
    if _current is not None and not _current._finished:
        _current.finish("completed", timeout=10.0)
