"""The server's hold on the Dask pool: the client, the local cluster when it starts one, the
pool token the workers read from the scheduler, and the workers the scheduler lists.

The dispatcher (``dispatcher.py``) owns one and submits jobs through its client; this
module knows nothing of jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from labrun.errors import InvalidRequest, ServerUnavailable
from labrun.executor import worker_id as address_id

if TYPE_CHECKING:
    from distributed import Client, SpecCluster

    from labrun.executor.cluster import PoolWorkerInfo


logger = logging.getLogger("labrun.dispatcher")

# Seconds a submission waits for a starting pool to check its GPUs: well inside the 30 s a
# client waits for an answer.
CHECK_GPUS_WAIT = 10.0


@dataclass
class DispatcherSettings:
    """The dispatcher's settings, the pool's among them (from ``c.LabRun``)."""

    scheduler: str = ""
    start_local: bool = True
    local_workers: int = 0
    local_directory: str = ""
    server_url: str = ""
    # The pool's token and its life (access.PoolToken.grant): what the workers use.
    grant: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    max_gpus_per_user: int = 0
    worker_timeout: float = 30.0
    warm_kernels: int = 1
    connect_timeout: float = 10.0
    batch_window: float = 0.01
    adaptive_backlog: int = 0
    job_token_lifetime: float = 7 * 86400.0


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("labrun: a worker of the local pool did not start: %r", task.exception())


class DaskPool:
    """The Dask client (and the local cluster, when it started one)."""

    def __init__(self, settings: DispatcherSettings) -> None:
        self.settings = settings
        self.state: Literal["starting", "ready", "error", "disabled"] = (
            "disabled" if not (settings.scheduler or settings.start_local) else "starting"
        )
        self.message: str | None = None
        self.client: Client | None = None
        self.cluster: SpecCluster | None = None
        self.workers: dict[str, PoolWorkerInfo] = {}
        self._ready = asyncio.Event()
        self._workers_at = 0.0
        # A local pool's workers after its first, and the task that starts them.
        self._later_workers: dict[str, dict[str, Any]] = {}
        self._adding: asyncio.Task[None] | None = None

    async def open(self) -> bool:
        """Connect to the scheduler, or start the local pool; False when that failed (the
        state and message say why)."""
        try:
            await self._connect()
        except Exception as err:  # noqa: BLE001 - reported in the pool's state and log
            self.state = "error"
            self.message = str(err) if isinstance(err, ServerUnavailable) else repr(err)
            logger.error("labrun: the pool is unavailable: %s", self.message)
            self._ready.set()
            return False
        self.state = "ready"
        self._ready.set()
        logger.info("labrun: pool ready at %s", self.scheduler_address)
        if self._later_workers and self.cluster is not None:
            from labrun.executor.cluster import add_workers

            # The local pool's other workers, now that one took the plugin: serving
            # needs none of them.
            self._adding = asyncio.create_task(add_workers(self.cluster, self._later_workers))
            self._adding.add_done_callback(_log_failure)
        return True

    def disabled(self) -> None:
        """No pool to start: whoever waits for it is answered at once."""
        self._ready.set()

    async def _connect(self) -> None:
        from distributed import Client

        from labrun.executor.cluster import local_cluster
        from labrun.executor.security import pool_security
        from labrun.executor.worker import POOL_TOKEN_KEY, worker_plugins

        s = self.settings
        if s.scheduler:
            security = pool_security("client", address=s.scheduler)
            try:
                self.client = await asyncio.wait_for(
                    Client(
                        s.scheduler,
                        asynchronous=True,
                        timeout=s.connect_timeout,
                        security=security,
                    ),
                    s.connect_timeout + 5,
                )
            except (OSError, asyncio.TimeoutError) as err:
                raise ServerUnavailable(
                    f"cannot reach the Dask scheduler at {s.scheduler} ({err}); check that it "
                    "runs and c.LabRun.dask_scheduler (or LABRUN_DASK_SCHEDULER)"
                ) from err
        else:
            # Its scheduler, its workers and this client: all three roles are this process's.
            security = pool_security("client", "scheduler", "worker")
            self.cluster, self._later_workers = local_cluster(
                cpu_workers=s.local_workers or None,
                local_directory=s.local_directory,
                security=security,
            )
            await self.cluster
            self.client = await Client(self.cluster, asynchronous=True, security=security)
        assert self.client is not None
        # First where workers look for a newer token, then the plugin: a worker set up in
        # between finds the token it was given, or a newer one.
        await self.client.set_metadata(POOL_TOKEN_KEY, s.grant)
        plugins = worker_plugins(
            s.server_url, s.grant, kernels=s.warm_kernels, worker_timeout=s.worker_timeout
        )
        for plugin in plugins:
            await self.client.register_plugin(plugin)

    async def publish_server(self, url: str) -> None:
        """Tell the workers where the scheduler of record is: they report there, and move
        there when the server they report to goes away."""
        from labrun.executor.worker import SERVER_KEY

        if self.client is not None:
            await self.client.set_metadata(SERVER_KEY, url)

    async def task_keys(self, prefix: str) -> set[str]:
        """The keys of the scheduler's tasks that start with ``prefix``."""
        if self.client is None:
            return set()

        def keys(dask_scheduler: Any, prefix: str = prefix) -> list[str]:
            return [k for k in dask_scheduler.tasks if isinstance(k, str) and k.startswith(prefix)]

        return set(await self.client.run_on_scheduler(keys))

    async def use_token(self, grant: dict[str, Any]) -> None:
        """The pool's new token: workers take it from the scheduler before theirs expires,
        and workers that join later find it there."""
        from labrun.executor.worker import POOL_TOKEN_KEY

        self.settings.grant = grant
        if self.client is not None:
            await self.client.set_metadata(POOL_TOKEN_KEY, grant)

    async def close(self, deadline: float) -> None:
        """Let go of the pool by ``deadline`` (the event loop's time): a local pool is
        closed, and what of it is still running then is killed."""
        if self._adding is not None:
            self._adding.cancel()
            await asyncio.wait([self._adding], timeout=1.0)
        if self.client is not None:
            # The scheduler may be gone already (the same Ctrl-C reached it): no waiting
            # on it beyond a moment.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(timeout=1), 1.5)
        if self.cluster is not None:
            from labrun.executor.cluster import close_cluster

            left = deadline - asyncio.get_running_loop().time()
            await close_cluster(self.cluster, timeout=max(left, 0.5))

    @property
    def scheduler_address(self) -> str | None:
        if self.cluster is not None:
            return self.cluster.scheduler_address
        return self.settings.scheduler or None

    async def wait_ready(self, timeout: float = 120.0) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ServerUnavailable(
                f"the pool did not start within {timeout:.0f} s; see the server's log"
            ) from None

    def address_of(self, worker_id: str | None) -> str | None:
        """The address of the worker whose id is ``worker_id``, while it is in the pool."""
        if worker_id is None:
            return None
        for address in self.workers:
            if address_id(address) == worker_id:
                return address
        return None

    async def refresh_workers(self, force: bool = False) -> bool:
        """Ask the scheduler for its workers, at most once a second; True when it did."""
        from labrun.executor.cluster import workers_of

        if self.client is None or (not force and time.monotonic() - self._workers_at < 1.0):
            return False
        assert self.client.scheduler is not None
        identity = await self.client.scheduler.identity(n_workers=-1)
        self.workers = workers_of(identity)
        self._workers_at = time.monotonic()
        return True

    async def check_gpus(self, gpus: int, *, fresh: bool = True) -> None:
        """Refuse a job no worker could ever run (Dask would leave it pending forever).

        ``fresh=False``: with the workers as seen within the last second (a cell's grant,
        which should not pay for asking the scheduler again)."""
        if self.state == "disabled":
            return
        try:
            # A pool that is still starting (just after `jupyter lab`, on a busy machine) may
            # take longer than a client waits for an answer; the job is queued durably
            # either way, so it is accepted without the check rather than timing out.
            await self.wait_ready(timeout=CHECK_GPUS_WAIT)
        except ServerUnavailable:
            if self.state == "starting":
                return
            raise
        if self.state == "error":
            raise ServerUnavailable(f"the pool is unavailable: {self.message}")
        await self.refresh_workers(force=fresh)
        if not self.workers or gpus == 0 or self.settings.adaptive_backlog:
            return  # an adaptive cluster's next workers may be bigger than today's
        best = max(w.gpus for w in self.workers.values())
        if gpus > best:
            listing = "; ".join(w.describe() for w in self.workers.values())
            raise InvalidRequest(
                f"no worker offers {gpus} GPU{'s' * (gpus > 1)} (the most is {best}); the "
                f"workers are: {listing}. Ask for fewer with --gpus, or add a worker with "
                "enough GPUs (`labrun worker SCHEDULER` on a GPU host)"
            )
