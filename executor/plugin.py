"""The labrun worker plugin: GPUs, telemetry, heartbeats and warm kernels on each worker.

The server registers it with the Dask scheduler (``client.register_plugin``), so every
worker, those that join later included, gets it: nothing to install per worker beyond the
``labrun[executor]`` package.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, cast

import nbformat
import psutil
from distributed import WorkerPlugin
from nbconvert import HTMLExporter

from labrun import settings
from labrun.client import Client
from labrun.errors import LabrunError
from labrun.models import GpuInfo, GpuSampleIn, HostSampleIn, IngestSamples, RegisterWorker

from . import quick_exit, worker_id
from .kernels import KernelPool
from .nvml import Gpus, open_gpus, owned_indices

if TYPE_CHECKING:
    from distributed import Worker

    from .cells import RunReporter
    from .runner import NotebookJob

logger = logging.getLogger("labrun.executor")

PLUGIN_NAME = "labrun"


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


class LabrunWorkerPlugin(WorkerPlugin):
    """Installed on every worker of the pool.

    Parameters
    ----------
    server_url, token:
        Where the worker reports (telemetry, heartbeats, logs, artifacts) and with what
        token: one the server issued to the pool.
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
        token: str,
        *,
        sample_interval: float = 1.0,
        post_interval: float = 2.0,
        kernels: int = 1,
    ) -> None:
        self.server_url = server_url
        self.token = token
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
    id: str

    def setup(self, worker: Worker) -> None:
        quick_exit()
        if worker.nanny is not None and threading.current_thread() is threading.main_thread():
            # Its nanny stops it, in order, jobs and kernels included. A terminal's Ctrl-C
            # reaches every process of the group, this one too, and would cut that short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.worker = worker
        self.id = worker_id(worker.address)
        self.client = Client(self.server_url, self.token, timeout=30)
        self.gpus = open_gpus()
        self.devices = DeviceAllocator(owned_indices(self.gpus))
        self.jobs = {}
        self.cells = {}
        self._stop = threading.Event()
        scratch = tempfile.mkdtemp(prefix="kernels-", dir=worker.local_directory)
        self.scratch = scratch
        self.pool = KernelPool(
            self.kernels * max(1, worker.state.nthreads),
            env={
                **os.environ,
                settings.SERVER_URL: self.server_url,
                settings.TOKEN: self.token,
                # CUDA numbers devices like NVML does, so an index means one device.
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "PYTHONUNBUFFERED": "1",
            },
            cwd=scratch,
        )
        self.pool.start()
        self._html_lock = threading.Lock()
        self._exporters: dict[bool, HTMLExporter] = {}
        # Loading nbconvert's templates takes half a second: do it before the first job.
        threading.Thread(
            target=self.render_html, args=(nbformat.v4.new_notebook(),), daemon=True
        ).start()
        self._thread = threading.Thread(
            target=self._report_loop, name="labrun-telemetry", daemon=True
        )
        self._thread.start()

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

    def _report_loop(self) -> None:
        gpu_batch: list[GpuSampleIn] = []
        host_batch: list[HostSampleIn] = []
        last_post = 0.0
        while not self._stop.is_set():
            try:
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
