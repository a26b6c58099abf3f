"""The kernel's handle on the pool: the labrun server and the pool's Dask scheduler."""

from __future__ import annotations

import contextlib
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

from labrun.client import Client
from labrun.delivery import Outbox
from labrun.errors import LabrunError
from labrun.models import PoolStatus

from .grants import KernelGrants
from .recording import Bookkeeper

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

        from labrun.executor.security import pool_security

        self.client = client
        status = wait_until_started(client)
        if status.state != "ready" or not status.scheduler:
            raise LabrunError(
                f"the pool is {status.state}"
                + (f": {status.message}" if status.message else "")
                + "; `labrun pool` shows it, and the server's log says why"
            )
        self.scheduler = status.scheduler
        # The pool's TLS, as the server and the workers have it: this kernel reads the same
        # Dask config (its environment, or a Dask YAML file).
        security = pool_security("client", address=status.scheduler)
        try:
            # Direct to workers: a session's actor is called on its worker, not through the
            # scheduler, and results come straight from the worker that holds them.
            self.dask = DaskClient(
                status.scheduler,
                set_as_default=False,
                timeout="10s",
                direct_to_workers=True,
                security=security,
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
        self._said_gpus = False
        self.bookkeeper = Bookkeeper(Outbox.of(client))
        # GPU cells and sessions wait for the scheduler of record's grant (grants.py).
        self.grants = KernelGrants(client, self.dask.id)

    def gpus_for(self, asked: int | None) -> int:
        """The GPUs a cell gets: as asked, else 1 where the pool has GPUs (else 0, said once)."""
        if asked is not None:
            return int(asked)
        if self.has_gpus:
            return 1
        if not self._said_gpus:
            print("labrun: the pool has no GPU workers; cells run on its CPU workers (--gpus 0)")
            self._said_gpus = True
        return 0

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
        # The task function Dask pickles by reference: the one thing the kernel imports
        # from the executor, and only once it needs it.
        from labrun.executor.tasks import stop_cell

        with contextlib.suppress(Exception):
            self.dask.run(stop_cell, token, on_error="ignore")

    def close(self) -> None:
        self.grants.flush()
        with contextlib.suppress(Exception):
            self.dask.close()


class QueuePriorities:
    """The server's queues and their priorities, asked for at most every ``ttl`` seconds."""

    def __init__(self, client: Callable[[], Client], ttl: float = 30.0) -> None:
        self.client = client
        self.ttl = ttl
        self._queues: tuple[float, dict[str, int]] | None = None

    def priority(self, name: str) -> int:
        """Queue ``name``'s priority; a LabrunError if there is no such queue."""
        if self._queues is None or time.monotonic() - self._queues[0] > self.ttl:
            listed = self.client().queues().queues
            self._queues = (time.monotonic(), {q.name: q.priority for q in listed})
        queues = self._queues[1]
        if name not in queues:
            known = ", ".join(sorted(queues)) or "none"
            raise LabrunError(
                f"--queue {name}: no such queue (queues: {known}); `labrun queues create` adds one"
            )
        return queues[name]
