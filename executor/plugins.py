"""The labrun worker plugins: small ones, each with one job, as distributed's own are.

The server registers them with the Dask scheduler (``client.register_plugin``, see
:func:`labrun.executor.worker.worker_plugins`), so every worker, those that join later
included, gets them: nothing to install per worker beyond the ``labrun[executor]`` package.
A task gets one with ``Devices.of()`` (or ``Devices.of(dask_worker)``), typed.

- :class:`ServerLink`: the worker's client of the server, and its pool token kept fresh.
- :class:`Devices`: the worker's GPUs (NVML), which run holds which, and the machine a job
  records.
- :class:`CellRuns`: the ``%%mlrun`` cells and sessions here, and how the last ones ended.
- :class:`Kernels`: the warm kernels notebook jobs take, and the jobs running here.
- :class:`Html`: the executed notebook as HTML (nbconvert's exporters, loaded once).

Telemetry and heartbeats are in :mod:`.telemetry`; the warm-up in :mod:`.worker`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from distributed import WorkerPlugin
from distributed.utils import sync
from typing_extensions import Self

from labrun import environment, settings
from labrun.client import Client
from labrun.delivery.batches import GroupCommit, claim_runs, refusal
from labrun.models import ClaimItem, ClaimRun, ItemOutcome

from . import quick_exit, worker_id
from .kernels import KernelPool
from .nvml import Gpus, open_gpus, owned_indices

if TYPE_CHECKING:
    from distributed import Worker
    from nbconvert import HTMLExporter

logger = logging.getLogger("labrun.executor")

# Where the server puts its pool's newest token on the scheduler (Client.set_metadata).
POOL_TOKEN_KEY = ["labrun", "pool-token"]
# Where the scheduler of record puts its URL on the scheduler: the server workers report to.
SERVER_KEY = ["labrun", "server"]
# A worker takes the server's newer token once this share of its own token's life is gone
# (the server issues one at half).
RENEW_AT = 2 / 3

P = TypeVar("P", bound="LabrunPlugin")


class LabrunPlugin(WorkerPlugin):
    """A labrun worker plugin: found by its type, closed once nothing uses it.

    Distributed tears a worker's plugins down in no order it promises. A plugin that another
    uses (:meth:`use`) closes (:meth:`close`) only once that one closed too: the heartbeat
    that says "closed" still has the client, and the telemetry thread still has the GPUs.
    """

    name: ClassVar[str]
    idempotent = True

    worker: Worker

    @classmethod
    def of(cls, worker: Worker | None = None) -> Self:
        """This plugin on ``worker``, or on the worker this task runs on."""
        if worker is None:
            from distributed import get_worker

            worker = get_worker()
        found = worker.plugins.get(cls.name)
        if found is None:
            raise RuntimeError(
                f"this Dask worker has no {cls.name} plugin; the labrun server installs it when "
                "it connects to the scheduler (c.LabRun.dask_scheduler)"
            )
        assert isinstance(found, cls), f"{cls.name} is a {type(found).__name__}"
        return found

    def _start(self, worker: Worker) -> None:
        self.worker = worker
        self._users = 0
        self._used: list[LabrunPlugin] = []
        self._torn_down = False
        self._closed = False

    def use(self, cls: type[P]) -> P:
        """Another plugin of this worker, kept open while this one is."""
        other = cls.of(self.worker)
        other._users += 1
        self._used.append(other)
        return other

    def teardown(self, worker: Worker) -> None:
        self._torn_down = True
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._torn_down or self._users or self._closed:
            return
        self._closed = True
        try:
            self.close()
        finally:
            for other in self._used:
                other._users -= 1
                other._close_if_unused()

    def close(self) -> None:
        """Free what the plugin holds (once torn down and unused)."""


class ServerLink(LabrunPlugin):
    """The worker's connection to the server: its client, its id, its pool token.

    Parameters
    ----------
    server_url:
        Where the worker reports (telemetry, heartbeats, logs, artifacts).
    grant:
        The token the server issued to its pool, with its life in Unix seconds:
        ``{"token", "issued", "expires"}``. The worker takes a newer one from the scheduler
        before it expires (``POOL_TOKEN_KEY``), so a worker joining after this one expired
        starts with the newer one too. The token stays in the worker: its kernels do not
        get it (a notebook job gets a token of its own run).
    """

    name = "labrun"

    def __init__(self, server_url: str, grant: dict[str, Any]) -> None:
        self.server_url = server_url
        self.grant = dict(grant)

    client: Client
    id: str

    async def setup(self, worker: Worker) -> None:
        self._start(worker)
        quick_exit()
        if worker.nanny is not None and threading.current_thread() is threading.main_thread():
            # Its nanny stops it, in order, jobs and kernels included. A terminal's Ctrl-C
            # reaches every process of the group, this one too, and would cut that short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.id = worker_id(worker.address)
        self.url_file = server_url_file(worker)
        # Made before the first await: the other plugins' setups use it.
        self.client = Client(
            self.server_url,
            self.grant["token"],
            timeout=30,
            renew=self._newest_token,
            relocate=self._relocate,
        )
        self._write_url()
        self._claims: GroupCommit[ClaimItem, ItemOutcome] = GroupCommit(
            lambda claims: claim_runs(self.client, claims)
        )
        # The token this plugin was registered with may have expired since: a newer one?
        self._take(await worker.scheduler.get_metadata(keys=POOL_TOKEN_KEY, default=None))
        # And the server that registered it may no longer be the one that dispatches.
        self._move(await worker.scheduler.get_metadata(keys=SERVER_KEY, default=None))

    def claim(self, run_id: int, claim: ClaimRun) -> None:
        """Start ``run_id`` here, if the server grants it (Conflict or NotFound if not).
        The claims this worker's threads make at once go to the server in one request."""
        outcome = self._claims(ClaimItem(run_id=run_id, **dict(claim)))
        if (error := refusal(outcome)) is not None:
            raise error

    def _move(self, url: Any) -> str | None:
        """Report to ``url`` from now on, if it is another server's; the URL in use."""
        if isinstance(url, str) and url and url.rstrip("/") + "/" != self.client.url:
            logger.info("labrun: reporting to %s, the server that dispatches now", url)
            self.server_url = url
            self.client.set_url(url)
            self._write_url()
        return self.client.url

    def _write_url(self) -> None:
        # Whole or not at all: a kernel may read it at any moment.
        partial = f"{self.url_file}.{os.getpid()}"
        with open(partial, "w") as f:
            f.write(self.client.url)
        os.replace(partial, self.url_file)

    def _published(self, key: list[str], what: str) -> tuple[bool, Any]:
        """What the server published on the scheduler under ``key`` (from a thread other
        than the worker's event loop): (whether the scheduler answered, the value)."""
        try:
            return True, sync(
                self.worker.loop,
                self.worker.scheduler.get_metadata,
                keys=key,
                default=None,
                callback_timeout=10,
            )
        except Exception as err:  # noqa: BLE001 - the scheduler may be restarting: ask again
            logger.info("labrun: could not ask the scheduler for %s: %s", what, err)
            return False, None

    def _relocate(self) -> str | None:
        """The scheduler of record's URL, asked of the scheduler: the server this worker
        reported to cannot be reached (it stopped; another took over)."""
        answered, url = self._published(SERVER_KEY, "the server's URL")
        return self._move(url) if answered else None

    def _take(self, grant: Any) -> bool:
        """Use ``grant`` if it outlives the token in use; whether it did."""
        if not isinstance(grant, dict) or grant.get("expires", 0) <= self.grant.get("expires", 0):
            return False
        self.grant = dict(grant)
        self.client.set_token(self.grant["token"])
        return True

    def renew(self) -> None:
        """Take the server's newer token once most of this one's life is gone."""
        issued, expires = self.grant.get("issued", 0.0), self.grant.get("expires", math.inf)
        if time.time() >= issued + (expires - issued) * RENEW_AT:
            self._newest_token()

    def _newest_token(self) -> str | None:
        """The newest token the server published for its pool, taken if newer than ours.

        Also what the worker's client calls when the server says its token expired (a
        worker too busy to renew in time): the request is retried once with it.
        """
        answered, newer = self._published(POOL_TOKEN_KEY, "a new token")
        if not answered:
            return None
        if self._take(newer):
            logger.info("labrun: took the pool's new token, valid until %s", newer["expires"])
        return str(self.grant["token"])

    def close(self) -> None:
        self.client.close()


def server_url_file(worker: Worker) -> str:
    """The file with the URL of the server this worker reports to, for its job kernels
    (``LABRUN_SERVER_URL_FILE``): they follow it when the server changes."""
    return os.path.join(worker.local_directory, "labrun-server-url")


# Who holds a device: a notebook job's run id, or "cell:KEY" / "session:KEY" for %%mlrun.
Holder = int | str


class DeviceAllocator:
    """Hands a worker's GPUs to runs: N concrete devices each, never one device to two."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = list(indices)
        self._holders: dict[int, Holder] = {}
        self._lock = threading.Lock()

    def allocate(self, run_id: Holder, count: int) -> list[int]:
        with self._lock:
            free = [i for i in self.indices if i not in self._holders]
            if count > len(free):
                raise RuntimeError(
                    f"run {run_id} needs {count} GPUs but this worker has {len(free)} free of "
                    f"{len(self.indices)}; is the worker's GPU resource larger than its GPUs?"
                )
            taken = free[:count]
            for index in taken:
                self._holders[index] = run_id
            return taken

    def release(self, run_id: Holder) -> None:
        with self._lock:
            for index in [i for i, r in self._holders.items() if r == run_id]:
                del self._holders[index]

    def holders(self) -> dict[int, Holder]:
        with self._lock:
            return dict(self._holders)


class Devices(LabrunPlugin):
    """The worker's GPUs: which run holds which, and what a job records of the machine."""

    name = "labrun-devices"

    gpus: Gpus | None
    allocator: DeviceAllocator
    # The installed distributions, as a job records them: listing them takes a fifth of a
    # second, so the telemetry thread refreshes this once a minute, off the jobs' path.
    packages: list[str] | None = None

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self.gpus = open_gpus()
        self.allocator = DeviceAllocator(owned_indices(self.gpus))

    @property
    def indices(self) -> list[int]:
        return self.allocator.indices

    def allocate(self, holder: Holder, count: int) -> list[int]:
        return self.allocator.allocate(holder, count)

    def release(self, holder: Holder) -> None:
        self.allocator.release(holder)

    def holders(self) -> dict[int, Holder]:
        return self.allocator.holders()

    def read_packages(self) -> list[str]:
        self.packages = environment.packages()
        return self.packages

    def job_environment(self, devices: list[int]) -> dict[str, Any]:
        """What a job records of this worker at its claim: the machine, its Python and
        packages, and the GPUs the job holds (with the driver)."""
        held: list[dict[str, Any]] = [{"index": i} for i in devices]
        if self.gpus is not None and devices:
            try:
                driver = self.gpus.driver()
                held = [
                    {
                        "index": d.index,
                        "name": d.name,
                        "uuid": d.uuid,
                        "memory_total": d.memory_total,
                        "driver": driver,
                    }
                    for d in self.gpus.devices()
                    if d.index in devices
                ]
            except Exception as err:  # noqa: BLE001 - the indices alone beat a failed job
                logger.warning("labrun: could not describe GPUs %s: %s", devices, err)
        # The first job may come before the warm-up read the packages.
        return environment.machine(held, self.packages or self.read_packages())

    def close(self) -> None:
        if self.gpus is not None:
            self.gpus.close()


class LiveCell(Protocol):
    """A ``%%mlrun`` cell or session here, as its reporter knows it."""

    key: str
    attempt: int | None  # the dispatched attempt, for a cell re-run from the server

    @property
    def run_id(self) -> int | None: ...


class CellOutcomes:
    """How the last cells a kernel waited for ended, by their key: what the worker gave the
    kernel to record, kept for the server to settle a run whose kernel went away first."""

    def __init__(self, most: int = 10_000, seconds: float = 3600.0) -> None:
        self.most = most
        self.seconds = seconds
        self._kept: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, key: str, record: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            self._kept[key] = (now, record)
            while self._kept and (
                len(self._kept) > self.most
                or next(iter(self._kept.values()))[0] < now - self.seconds
            ):
                self._kept.popitem(last=False)

    def find(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: self._kept[key][1] for key in keys if key in self._kept}


class CellRuns(LabrunPlugin):
    """The ``%%mlrun`` cells and sessions on this worker, and how the last ones ended."""

    name = "labrun-cells"

    # By their device holder name ("cell:KEY", "session:KEY").
    cells: dict[str, LiveCell]
    outcomes: CellOutcomes

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self.cells = {}
        self.outcomes = CellOutcomes()

    def run_ids(self) -> list[int]:
        return [c.run_id for c in list(self.cells.values()) if c.run_id is not None]

    def run_of(self, holder: Holder | None) -> int | None:
        """The run id a device holder stands for (None for a cell not yet recorded)."""
        if holder is None or isinstance(holder, int):
            return holder
        cell = self.cells.get(holder)
        return cell.run_id if cell is not None else None


class Job(Protocol):
    """A notebook job running on this worker."""

    def cancel(self, reason: str) -> None: ...

    def abandon(self, reason: str) -> None: ...

    @property
    def attempt(self) -> int: ...


class Kernels(LabrunPlugin):
    """The warm kernels notebook jobs take, and the jobs that run here.

    Parameters
    ----------
    server_url:
        What a job's kernel reports to (with its own run's token, not the pool's).
    kernels:
        Warm kernels kept per worker thread.
    """

    name = "labrun-kernels"

    def __init__(self, server_url: str, kernels: int = 1) -> None:
        self.server_url = server_url
        self.kernels = kernels

    pool: KernelPool
    scratch: str
    jobs: dict[int, Job]

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self.jobs = {}
        self.scratch = tempfile.mkdtemp(prefix="kernels-", dir=worker.local_directory)
        self.pool = KernelPool(
            self.kernels * max(1, worker.state.nthreads),
            env={
                # Not the pool's token (nor one the worker was started with): a job's
                # kernel gets its own run's token when the job starts.
                **{k: v for k, v in os.environ.items() if k != settings.TOKEN},
                settings.SERVER_URL: self.server_url,
                settings.SERVER_URL_FILE: server_url_file(worker),
                # CUDA numbers devices like NVML does, so an index means one device.
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "PYTHONUNBUFFERED": "1",
            },
            cwd=self.scratch,
        )

    def teardown(self, worker: Worker) -> None:
        # The jobs stop at once, before whatever else closes.
        for job in list(self.jobs.values()):
            job.cancel("the worker is closing")
        super().teardown(worker)

    def close(self) -> None:
        self.pool.close()


class Html(LabrunPlugin):
    """The executed notebook as HTML: one exporter of each kind per worker, loaded once."""

    name = "labrun-html"

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self._lock = threading.Lock()
        self._exporters: dict[bool, HTMLExporter] = {}

    def render(self, nb: Any, *, code: bool = True) -> str:
        """``nb`` as HTML, with or without its code cells' inputs."""
        with self._lock:
            exporter = self._exporters.get(code)
            if exporter is None:
                # Imported here: nbconvert (and jsonschema through nbformat) take seconds
                # to import, which the worker's start should not wait for.
                from nbconvert import HTMLExporter

                # A report for a reader: outputs only, and no prompts where inputs are gone.
                exporter = self._exporters[code] = HTMLExporter(
                    exclude_input=not code,
                    exclude_input_prompt=not code,
                    exclude_output_prompt=not code,
                )
            body, _ = exporter.from_notebook_node(nb)
        return body
