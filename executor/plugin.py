"""The labrun worker plugin: GPUs, telemetry, heartbeats and warm kernels on each worker.

The server registers it with the Dask scheduler (``client.register_plugin``), so every
worker, those that join later included, gets it: nothing to install per worker beyond the
``labrun[executor]`` package.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal, cast

import psutil
from distributed import WorkerPlugin
from distributed.utils import sync

from labrun import environment, settings
from labrun.client import Client
from labrun.errors import LabrunError
from labrun.models import GpuInfo, GpuSampleIn, HostSampleIn, IngestSamples, RegisterWorker

from . import quick_exit, worker_id
from .kernels import KernelPool
from .nvml import Gpus, open_gpus, owned_indices

if TYPE_CHECKING:
    from distributed import Worker
    from nbconvert import HTMLExporter

    from .cells import RunReporter
    from .runner import NotebookJob

logger = logging.getLogger("labrun.executor")

PLUGIN_NAME = "labrun"
# Where the server puts its pool's newest token on the scheduler (Client.set_metadata).
POOL_TOKEN_KEY = ["labrun", "pool-token"]
# A worker takes the server's newer token once this share of its own token's life is gone
# (the server issues one at half).
RENEW_AT = 2 / 3


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


class LabrunWorkerPlugin(WorkerPlugin):
    """Installed on every worker of the pool.

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
    sample_interval:
        Seconds between GPU and host samples.
    post_interval:
        Seconds between posts of the samples gathered meanwhile (and heartbeats).
    kernels:
        Warm kernels kept per worker thread.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        server_url: str,
        grant: dict[str, Any],
        *,
        sample_interval: float = 1.0,
        post_interval: float = 2.0,
        kernels: int = 1,
    ) -> None:
        self.server_url = server_url
        self.grant = dict(grant)
        self.sample_interval = sample_interval
        self.post_interval = post_interval
        self.kernels = kernels

    # Set in setup(), on the worker.
    worker: Worker
    client: Client
    gpus: Gpus | None
    devices: DeviceAllocator
    pool: KernelPool
    jobs: dict[int, NotebookJob]
    # The %%mlrun cells and sessions here, by their device holder name.
    cells: dict[str, RunReporter]
    outcomes: CellOutcomes
    id: str
    # The installed distributions, as a job records them: listing them takes a fifth of a
    # second, so the telemetry thread refreshes this once a minute, off the jobs' path.
    packages: list[str] | None = None

    async def setup(self, worker: Worker) -> None:
        quick_exit()
        if worker.nanny is not None and threading.current_thread() is threading.main_thread():
            # Its nanny stops it, in order, jobs and kernels included. A terminal's Ctrl-C
            # reaches every process of the group, this one too, and would cut that short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The token this plugin was registered with may have expired since: a newer one?
        self._take(await worker.scheduler.get_metadata(keys=POOL_TOKEN_KEY, default=None))
        self._setup(worker)

    def _take(self, grant: Any) -> bool:
        """Use ``grant`` if it outlives the token in use; whether it did."""
        if not isinstance(grant, dict) or grant.get("expires", 0) <= self.grant.get("expires", 0):
            return False
        self.grant = dict(grant)
        client: Client | None = getattr(self, "client", None)
        if client is not None:
            client.set_token(self.grant["token"])
        return True

    def _renew(self) -> None:
        """Take the server's newer token once most of this one's life is gone."""
        issued, expires = self.grant.get("issued", 0.0), self.grant.get("expires", math.inf)
        if time.time() >= issued + (expires - issued) * RENEW_AT:
            self._newest_token()

    def _newest_token(self) -> str | None:
        """The newest token the server published for its pool, taken if newer than ours.

        Also what the worker's client calls when the server says its token expired (a
        worker too busy to renew in time): the request is retried once with it.
        """
        try:
            newer = sync(
                self.worker.loop,
                self.worker.scheduler.get_metadata,
                keys=POOL_TOKEN_KEY,
                default=None,
                callback_timeout=10,
            )
        except Exception as err:  # noqa: BLE001 - the scheduler may be restarting; try again
            logger.info("labrun: could not ask the scheduler for a new token: %s", err)
            return None
        if self._take(newer):
            logger.info("labrun: took the pool's new token, valid until %s", newer["expires"])
        return str(self.grant["token"])

    def _setup(self, worker: Worker) -> None:
        self.worker = worker
        self.id = worker_id(worker.address)
        self.client = Client(
            self.server_url, self.grant["token"], timeout=30, renew=self._newest_token
        )
        self.gpus = open_gpus()
        self.devices = DeviceAllocator(owned_indices(self.gpus))
        self.jobs = {}
        self.cells = {}
        self.outcomes = CellOutcomes()
        self._stop = threading.Event()
        scratch = tempfile.mkdtemp(prefix="kernels-", dir=worker.local_directory)
        self.scratch = scratch
        self.pool = KernelPool(
            self.kernels * max(1, worker.state.nthreads),
            env={
                # Not the pool's token (nor one the worker was started with): a job's
                # kernel gets its own run's token when the job starts.
                **{k: v for k, v in os.environ.items() if k != settings.TOKEN},
                settings.SERVER_URL: self.server_url,
                # CUDA numbers devices like NVML does, so an index means one device.
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "PYTHONUNBUFFERED": "1",
            },
            cwd=scratch,
        )
        self._html_lock = threading.Lock()
        self._exporters: dict[bool, HTMLExporter] = {}
        self._packages_at = time.monotonic()
        threading.Thread(target=self._warm_up, name="labrun-warm-up", daemon=True).start()
        self._thread = threading.Thread(
            target=self._report_loop, name="labrun-telemetry", daemon=True
        )
        self._thread.start()

    def _warm_up(self) -> None:
        """Prepare what runs will need, off the worker's event loop, the soonest needed first.

        A worker that just joined is soon asked for a %%mlrun cell (the first cell of a
        notebook opened as the server started): IPython's shell first. Then the warm
        kernels notebook jobs take (a zygote importing ipykernel, then a kernel forked),
        then nbconvert's templates (half a second) and the package list (a fifth). All
        of it is CPU a starting pool shares with that first cell, so none of it comes
        before the cell's own imports; a job that comes sooner starts its kernel itself.
        """
        try:
            from . import cells  # noqa: F401 - what a cell runs in: IPython's shell
        except Exception:  # the cell itself reports the same failure
            logger.exception("labrun: could not import the cell runner")
        if self._stop.is_set():
            return  # torn down meanwhile
        self.pool.start()
        try:
            import nbformat

            self.render_html(nbformat.v4.new_notebook())
            self._read_packages()
            from . import runner  # noqa: F401 - papermill, for the first notebook job
        except Exception:  # the first job does it again, and reports it
            logger.exception("labrun: warming up nbconvert failed")

    def teardown(self, worker: Worker) -> None:
        self._stop.set()
        for job in list(self.jobs.values()):
            job.cancel("the worker is closing")
        self.pool.close()
        self._thread.join(5)
        try:
            self.client.heartbeat(self.id, self._registration("closed"))
        except (LabrunError, OSError):
            pass  # the server may be gone first; its heartbeat timeout covers that
        self.client.close()
        if self.gpus is not None:
            self.gpus.close()

    # --- reporting -----------------------------------------------------------------

    def _registration(
        self, status: Literal["running", "closing", "closed"] = "running"
    ) -> RegisterWorker:
        devices = self.gpus.devices() if self.gpus is not None else []
        owned = set(self.devices.indices)
        return RegisterWorker(
            host=socket.gethostname(),
            address=self.worker.address,
            resources=dict(self.worker.state.total_resources),
            gpus=[
                GpuInfo(index=d.index, name=d.name, uuid=d.uuid, memory_total=d.memory_total)
                for d in devices
                if d.index in owned
            ],
            status=status,
            runs=sorted([*self.jobs, *self._cell_runs()]),
            nthreads=self.worker.state.nthreads,
        )

    def _cell_runs(self) -> list[int]:
        return [r.run_id for r in list(self.cells.values()) if r.run_id is not None]

    def run_of(self, holder: Holder | None) -> int | None:
        """The run id a device holder stands for (None for a cell not yet recorded)."""
        if holder is None or isinstance(holder, int):
            return holder
        reporter = self.cells.get(holder)
        return reporter.run_id if reporter is not None else None

    def sample(self) -> tuple[list[GpuSampleIn], HostSampleIn]:
        now = time.time()
        holders = self.devices.holders()
        gpu_samples = []
        if self.gpus is not None:
            for index in self.devices.indices:
                reading = self.gpus.read(index)
                gpu_samples.append(
                    GpuSampleIn(
                        worker_id=self.id,
                        gpu_index=index,
                        time=now,
                        utilization=reading.utilization,
                        memory_used=reading.memory_used,
                        memory_total=reading.memory_total,
                        temperature=reading.temperature,
                        power=reading.power,
                        run_id=self.run_of(holders.get(index)),
                    )
                )
        memory = psutil.virtual_memory()
        net = psutil.net_io_counters()
        host = HostSampleIn(
            worker_id=self.id,
            time=now,
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_used=int(memory.total - memory.available),
            ram_total=int(memory.total),
            net_sent=int(net.bytes_sent) if net else None,
            net_recv=int(net.bytes_recv) if net else None,
        )
        return gpu_samples, host

    def _read_packages(self) -> list[str]:
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
        return environment.machine(held, self.packages or self._read_packages())

    def _report_loop(self) -> None:
        gpu_batch: list[GpuSampleIn] = []
        host_batch: list[HostSampleIn] = []
        last_post = 0.0
        while not self._stop.is_set():
            try:
                self._renew()
                if time.monotonic() - self._packages_at > 60:
                    self._packages_at = time.monotonic()
                    self._read_packages()
                gpus, host = self.sample()
                gpu_batch.extend(gpus)
                host_batch.append(host)
                if time.monotonic() - last_post >= self.post_interval:
                    self.client.heartbeat(self.id, self._registration())
                    self.client.post_samples(IngestSamples(gpus=gpu_batch, hosts=host_batch))
                    gpu_batch, host_batch = [], []
                    last_post = time.monotonic()
            except (LabrunError, OSError) as err:
                # The server restarting is normal: keep sampling, drop what cannot wait.
                logger.info("labrun: telemetry post failed: %s", err)
                gpu_batch, host_batch = gpu_batch[-600:], host_batch[-60:]
            except Exception:
                logger.exception("labrun: telemetry failed")
            self._stop.wait(self.sample_interval)

    def render_html(self, nb: Any, *, code: bool = True) -> str:
        """The executed notebook as HTML, with or without its code cells' inputs.

        One exporter of each kind per worker: their templates load once.
        """
        with self._html_lock:
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

    def describe(self) -> dict[str, Any]:
        """What this worker runs, for `client.run` from the server and for tests."""
        return {
            "id": self.id,
            "devices": self.devices.indices,
            "holders": {i: self.run_of(h) for i, h in self.devices.holders().items()},
            "cells": sorted(self.cells),
            "jobs": sorted(self.jobs),
            "warm_kernels": self.pool.ready,
        }


def get_plugin(worker: Worker | None = None) -> LabrunWorkerPlugin:
    """The labrun plugin of ``worker``, or of the worker this task runs on."""
    from distributed import get_worker

    plugin = (worker or get_worker()).plugins.get(PLUGIN_NAME)
    if plugin is None:
        raise RuntimeError(
            "this Dask worker has no labrun plugin; the labrun server installs it when it "
            "connects to the scheduler (c.LabRun.dask_scheduler)"
        )
    return cast(LabrunWorkerPlugin, plugin)
