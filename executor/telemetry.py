"""The telemetry plugin: the worker's heartbeat (its registration) and its GPU and host samples.

What the server sees of a worker comes from here: every ``post_interval`` the worker's
registration (its GPUs, resources and the runs it holds) and the samples taken every
``sample_interval`` meanwhile; a last heartbeat says "closed" when the worker goes. A worker
whose heartbeats stop getting through gives its jobs up before the server gives them to
another worker (:mod:`.fencing`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Literal

import psutil

from labrun.errors import LabrunError
from labrun.models import (
    AttemptRef,
    GpuInfo,
    GpuSampleIn,
    HostSampleIn,
    IngestSamples,
    RegisterWorker,
)

from .fencing import FENCE_CHECK, SCHEDULER_PROBE, Fence, abandon_all, fence_after
from .plugins import CellRuns, Devices, Kernels, LabrunPlugin, ServerLink

if TYPE_CHECKING:
    from distributed import Worker

logger = logging.getLogger("labrun.executor")

# Seconds between refreshes of the package list a job records.
PACKAGES_EVERY = 60.0


class Telemetry(LabrunPlugin):
    """Samples GPUs and the host, posts them with a heartbeat; renews the pool token.

    Parameters
    ----------
    sample_interval:
        Seconds between GPU and host samples.
    post_interval:
        Seconds between posts of the samples gathered meanwhile (and heartbeats).
    worker_timeout:
        The server's ``c.LabRun.worker_timeout``: the worker gives its jobs up after
        :func:`~.fencing.fence_after` of it without a heartbeat getting through.
    """

    name = "labrun-telemetry"

    def __init__(
        self,
        *,
        sample_interval: float = 1.0,
        post_interval: float = 2.0,
        worker_timeout: float = 30.0,
    ) -> None:
        self.sample_interval = sample_interval
        self.post_interval = post_interval
        self.worker_timeout = worker_timeout

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self.link = self.use(ServerLink)
        self.devices = self.use(Devices)
        self.cells = self.use(CellRuns)
        self.kernels = self.use(Kernels)
        self._stop = threading.Event()
        self._packages_at = time.monotonic()
        self.fence = Fence(fence_after(self.worker_timeout))
        # The attempts given up at a fence, said in every heartbeat until one gets through.
        self.abandoned: list[AttemptRef] = []
        self._abandoned_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._report_loop, name="labrun-telemetry", daemon=True
        )
        self._thread.start()
        # Its own thread: the report loop hangs in a request to the server when the link is
        # cut, and the fence must not wait for that request's timeout.
        self._fencing = threading.Thread(target=self._fence_loop, name="labrun-fence", daemon=True)
        self._fencing.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._fencing.join(5)
        try:
            self.link.client.heartbeat(self.link.id, self.registration("closed"))
        except (LabrunError, OSError):
            pass  # the server may be gone first; its heartbeat timeout covers that

    def registration(
        self, status: Literal["running", "closing", "closed"] = "running"
    ) -> RegisterWorker:
        gpus = self.devices.gpus
        listed = gpus.devices() if gpus is not None else []
        owned = set(self.devices.indices)
        return RegisterWorker(
            host=socket.gethostname(),
            address=self.worker.address,
            resources=dict(self.worker.state.total_resources),
            gpus=[
                GpuInfo(index=d.index, name=d.name, uuid=d.uuid, memory_total=d.memory_total)
                for d in listed
                if d.index in owned
            ],
            status=status,
            runs=sorted([*self.kernels.jobs, *self.cells.run_ids()]),
            nthreads=self.worker.state.nthreads,
            abandoned=list(self.abandoned),
        )

    def sample(self) -> tuple[list[GpuSampleIn], HostSampleIn]:
        now = time.time()
        holders = self.devices.holders()
        gpus = self.devices.gpus
        gpu_samples = []
        if gpus is not None:
            for index in self.devices.indices:
                reading = gpus.read(index)
                gpu_samples.append(
                    GpuSampleIn(
                        worker_id=self.link.id,
                        gpu_index=index,
                        time=now,
                        utilization=reading.utilization,
                        memory_used=reading.memory_used,
                        memory_total=reading.memory_total,
                        temperature=reading.temperature,
                        power=reading.power,
                        run_id=self.cells.run_of(holders.get(index)),
                    )
                )
        memory = psutil.virtual_memory()
        net = psutil.net_io_counters()
        host = HostSampleIn(
            worker_id=self.link.id,
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
        client = self.link.client
        while not self._stop.is_set():
            try:
                self.link.renew()
                if time.monotonic() - self._packages_at > PACKAGES_EVERY:
                    self._packages_at = time.monotonic()
                    self.devices.read_packages()
                gpus, host = self.sample()
                gpu_batch.extend(gpus)
                host_batch.append(host)
                sent = time.monotonic()
                if sent - last_post >= self.post_interval:
                    registration = self.registration()
                    client.heartbeat(self.link.id, registration)
                    last_post = sent  # the pace of heartbeats, however long one takes
                    with self._abandoned_lock:
                        told = registration.abandoned
                        self.abandoned = [a for a in self.abandoned if a not in told]
                    if self.fence.reached(sent, time.monotonic()):
                        logger.warning(
                            "labrun: the server at %s answers again; this worker takes work",
                            client.url,
                        )
                    client.post_samples(IngestSamples(gpus=gpu_batch, hosts=host_batch))
                    gpu_batch, host_batch = [], []
            except (LabrunError, OSError) as err:
                # The server restarting is normal: keep sampling, drop what cannot wait.
                logger.info("labrun: telemetry post failed: %s", err)
                gpu_batch, host_batch = gpu_batch[-600:], host_batch[-60:]
            except Exception:
                logger.exception("labrun: telemetry failed")
            self._stop.wait(self.sample_interval)

    def _fence_loop(self) -> None:
        probed = -SCHEDULER_PROBE
        said_away = False
        while not self._stop.wait(FENCE_CHECK):
            now = time.monotonic()
            if not self.fence.due(now):
                said_away = said_away and self.fence.fenced  # the server answered again
                continue
            if now - probed < SCHEDULER_PROBE:
                continue
            probed = now
            if self._scheduler_answers():
                if not said_away:
                    logger.warning(
                        "labrun: the server at %s has not answered for %.0f s, but the "
                        "scheduler does: the server is away, not this worker, which keeps "
                        "its jobs",
                        self.link.client.url,
                        self.fence.silence(now),
                    )
                    said_away = True
                continue
            if self.fence.check(time.monotonic()):
                self._give_up(now)

    def _scheduler_answers(self) -> bool:
        """Whether the Dask scheduler answers this worker within SCHEDULER_PROBE seconds."""
        from distributed.utils import sync

        try:
            sync(self.worker.loop, self.worker.scheduler.identity, callback_timeout=SCHEDULER_PROBE)
            return True
        except Exception:  # noqa: BLE001 - no answer in time, or none at all
            return False

    def _give_up(self, now: float) -> None:
        try:
            reason = (
                f"this worker could not reach the server at {self.link.client.url} nor the "
                f"scheduler for {self.fence.silence(now):.0f} s; the server runs its jobs "
                f"elsewhere after {self.worker_timeout:g} s (c.LabRun.worker_timeout)"
            )
            stopped = abandon_all(self.kernels, self.cells, reason)
            with self._abandoned_lock:
                self.abandoned += stopped
            gave_up = ", ".join(f"run {a.run_id} (attempt {a.attempt})" for a in stopped)
            level = logging.WARNING if stopped else logging.INFO
            logger.log(level, "labrun: %s: gave up %s", reason, gave_up or "no job")
        except Exception:
            logger.exception("labrun: stopping the jobs of a cut-off worker failed")
