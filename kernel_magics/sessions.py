"""``--session``: a namespace, and GPUs, kept on one worker between a kernel's cells."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from labrun import environment
from labrun.errors import LabrunError
from labrun.models import CreateRun, RunKind, RunStatus

from .pool import Pool


class SessionHandle:
    """A ``--session``: a :class:`CellSession` actor on one worker, with its run."""

    def __init__(
        self, pool: Pool, name: str, future: Any, actor: Any, run_id: int, key: str, gpus: int
    ) -> None:
        self.pool = pool
        self.gpus = gpus
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
        if self.gpus:
            self.pool.grants.release(self.key, at_once=True)


def start_session(
    pool: Pool,
    name: str,
    *,
    gpus: int,
    project: str,
    idle_timeout: float,
    priority: int,
    queue: str | None = None,
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
    if gpus:
        # Its GPUs are held from its start to its release: granted by the scheduler of
        # record under the rules jobs follow.
        try:
            pool.grants.acquire(key, gpus, kind="session", queue=queue, what=f"session {name!r}")
        except BaseException:
            with contextlib.suppress(LabrunError):
                pool.client.cancel_run(run.id)
            raise
    # The actor's class, which Dask pickles by reference: imported where it is submitted.
    from labrun.executor.sessions import CellSession

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
            if gpus:
                pool.grants.release(key, at_once=True)
            raise
    return SessionHandle(pool, name, future, actor, run.id, key, gpus)


class Sessions:
    """A kernel's sessions, by name."""

    def __init__(self) -> None:
        self._handles: dict[str, SessionHandle] = {}

    def open(
        self,
        pool: Pool,
        name: str,
        *,
        gpus: int,
        project: str,
        idle_timeout: float,
        priority: int,
        queue: str | None = None,
    ) -> SessionHandle:
        """Session ``name``, started (and announced) if it is not yet."""
        found = self._handles.get(name)
        if found is not None:
            return found
        try:
            handle = start_session(
                pool,
                name,
                gpus=gpus,
                project=project,
                idle_timeout=idle_timeout,
                priority=priority,
                queue=queue,
            )
        except LabrunError as err:
            raise LabrunError(f"could not start session {name!r}: {err}") from None
        self._handles[name] = handle
        where = f" on GPU {','.join(map(str, handle.devices))}" if handle.devices else ""
        print(f"labrun: session {name!r} started on {handle.worker}{where}")
        return handle

    def release(self, name: str) -> None:
        """End session ``name`` and give its GPUs back (a LabrunError if there is none)."""
        handle = self._handles.pop(name, None)
        if handle is None:
            known = ", ".join(sorted(self._handles)) or "none"
            raise LabrunError(f"no session named {name!r} in this kernel (sessions: {known})")
        handle.release()
        print(f"labrun: session {name!r} released")

    def close(self) -> None:
        for handle in list(self._handles.values()):
            handle.release()
        self._handles.clear()
