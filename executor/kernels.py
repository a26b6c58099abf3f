"""A small pool of pre-started kernels, so a notebook job does not wait for one.

Starting an IPython kernel and waiting until it answers takes most of a second; shutting it
down, a fifth more. The pool starts kernels ahead of time on its own event loop thread,
hands each out once, starts a replacement at once, and shuts used kernels down in the
background: both costs leave the job's path. A kernel that died while it waited is thrown
away and another one handed out. Kernels are forked from a zygote that has imported
ipykernel already (:mod:`labrun.executor.forking`), which cuts most of a start's CPU.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from labrun import settings

from .forking import ForkingProvisioner, Zygote

logger = logging.getLogger("labrun.executor")

T = TypeVar("T")

# Attempts at starting one kernel before the pool gives up on that slot for a while.
START_ATTEMPTS = 3


class KernelUnavailable(RuntimeError):
    """No kernel could be started (the kernelspec is missing, or every start failed)."""


class KernelPool:
    """``size`` started, ready kernels of ``kernel_name``, each handed out once.

    Parameters
    ----------
    size:
        Kernels kept ready. One per job the worker runs at once is enough for jobs longer
        than a kernel's start; more help when jobs are very short.
    env:
        Extra environment for every kernel (the server's URL and token).
    cwd:
        Where kernels start; a job moves its kernel to its own working directory.
    fork:
        Fork kernels from a zygote (default: unless ``LABRUN_FORK_KERNELS=0``). Where the
        zygote cannot start, kernels are launched as new processes.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        kernel_name: str = "python3",
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        startup_timeout: float = 60.0,
        preload: str = "",
        fork: bool | None = None,
    ) -> None:
        self.preload = preload
        self.fork = os.environ.get(settings.FORK_KERNELS, "1") != "0" if fork is None else fork
        self._zygote: Zygote | None = None
        self.size = size
        self.kernel_name = kernel_name
        self.env = dict(env or {})
        self.cwd = str(cwd) if cwd else None
        self.startup_timeout = startup_timeout
        self._ready: queue.Queue[AsyncKernelManager] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="labrun-kernel-pool", daemon=True
        )
        self._closed = False
        self._starting = 0
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        if self.fork:
            # On the pool's thread, before the first kernel starts: the zygote's imports
            # take a second, which the worker starting this pool need not wait for.
            self._loop.call_soon_threadsafe(self._start_zygote)
        for _ in range(self.size):
            self._refill()

    def close(self) -> None:
        """Shut every waiting kernel down and stop the pool's thread."""
        if self._closed:
            return
        self._closed = True
        kernels = []
        while True:
            try:
                kernels.append(self._ready.get_nowait())
            except queue.Empty:
                break
        if self._thread.is_alive():
            if kernels:
                try:
                    self.call(self._shutdown_all(kernels), 15)
                except Exception as err:  # noqa: BLE001 - the worker is closing: log, never raise
                    logger.warning("labrun: could not shut down warm kernels: %s", err)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if self._zygote is not None:
            self._zygote.close()

    @property
    def ready(self) -> int:
        """Kernels started and waiting for a job."""
        return self._ready.qsize()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the pool's loop (where its kernels' sockets live) and wait."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    # --- kernels -------------------------------------------------------------------

    def _refill(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._starting += 1
        asyncio.run_coroutine_threadsafe(self._start_one(), self._loop)

    async def _start_one(self) -> None:
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                km = self._manager()
                try:
                    await km.start_kernel(env=self.env, cwd=self.cwd)
                    client = km.client()
                    assert isinstance(client, AsyncKernelClient)
                    client.start_channels()
                    try:
                        # Not wait_for_ready: it spends a fixed 0.2 s draining IOPub.
                        await connect_ready(client, self.startup_timeout)
                        if self.preload:
                            await client.execute_interactive(
                                self.preload, store_history=False, timeout=self.startup_timeout
                            )
                    finally:
                        client.stop_channels()
                except Exception as err:  # noqa: BLE001 - any failure means: another kernel
                    # Port clashes and start timeouts happen when many kernels start at
                    # once: try again with a fresh kernel.
                    self.last_error = f"{type(err).__name__}: {err}"
                    logger.warning(
                        "labrun: kernel start %d/%d failed: %s", attempt, START_ATTEMPTS, err
                    )
                    await self._shutdown(km)
                    continue
                if self._closed:
                    await self._shutdown(km)
                else:
                    self._ready.put(km)
                return
        finally:
            with self._lock:
                self._starting -= 1

    def _start_zygote(self) -> None:
        try:
            self._zygote = Zygote()
        except (OSError, RuntimeError) as err:
            logger.warning("labrun: kernels start as new processes (no zygote: %s)", err)
            self._zygote = None

    def _manager(self) -> AsyncKernelManager:
        km = AsyncKernelManager(kernel_name=self.kernel_name)
        if self._zygote is not None:
            if not self._zygote.alive:
                logger.warning("labrun: the kernel zygote died; starting another")
                self._start_zygote()
            if self._zygote is not None:
                km.kernel_id = str(uuid.uuid4())
                provisioner = ForkingProvisioner(
                    kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km
                )
                provisioner.zygote = self._zygote
                km.provisioner = provisioner
        return km

    async def _shutdown_all(self, kernels: list[AsyncKernelManager]) -> None:
        await asyncio.gather(*(self._shutdown(km) for km in kernels))

    async def _shutdown(self, km: AsyncKernelManager) -> None:
        try:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
        except Exception as err:  # noqa: BLE001 - a kernel already gone is fine
            logger.debug("labrun: kernel shutdown failed: %s", err)

    async def _alive(self, km: AsyncKernelManager) -> bool:
        return bool(km.has_kernel and await km.is_alive())

    def acquire(self, timeout: float = 120.0) -> AsyncKernelManager:
        """A started, ready kernel for one job; a replacement starts at once."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelUnavailable(
                    f"no kernel {self.kernel_name!r} became ready in {timeout:.0f} s"
                    + (f"; last error: {self.last_error}" if self.last_error else "")
                )
            with self._lock:
                starving = self._ready.empty() and self._starting == 0
            if starving:
                self._refill()
            try:
                km = self._ready.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self._refill()
            if self.call(self._alive(km), 10):
                return km
            # It died while it waited (killed, out of memory): never give it to a job.
            logger.warning("labrun: a warm kernel had died; using another")
            self.discard(km)

    def give_back(self, km: AsyncKernelManager) -> None:
        """Return a kernel no code ran in (its job turned out not to be ours)."""
        self._ready.put(km)

    def run_code(self, km: AsyncKernelManager, code: str, timeout: float = 30.0) -> dict[str, Any]:
        """Execute ``code`` silently in ``km`` (set-up before a job, a flush after it)."""

        async def execute() -> dict[str, Any]:
            client = km.client()
            client.start_channels()
            try:
                reply = await client.execute_interactive(
                    code, store_history=False, timeout=timeout, output_hook=lambda msg: None
                )
            finally:
                client.stop_channels()
            return dict(reply["content"])

        return self.call(execute(), timeout + 5)

    def interrupt(self, km: AsyncKernelManager) -> None:
        async def interrupt() -> None:
            await km.interrupt_kernel()

        self.call(interrupt(), 10)

    def kill(self, km: AsyncKernelManager) -> None:
        self.call(self._shutdown(km), 15)

    def discard(self, km: AsyncKernelManager) -> None:
        """Shut a used (or dead) kernel down in the background."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(km), self._loop)


async def connect_ready(client: AsyncKernelClient, timeout: float) -> None:
    """Wait until the kernel answers on shell and its IOPub messages reach ``client``.

    A subscriber misses what is published before its subscription lands; a kernel_info
    request's IOPub status message shows it has landed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = client.kernel_info()
        try:
            while True:
                reply = await client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            while True:
                msg = await client.get_iopub_msg(timeout=0.5)
                # This request's idle status: IOPub is connected and its messages drained.
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    return
        except (queue.Empty, asyncio.TimeoutError):
            continue
    raise RuntimeError(f"the kernel did not answer within {timeout:.0f} s")


def setup_code(environ: Mapping[str, str], cwd: str | None) -> str:
    """Code that points a warm kernel at one job: its environment and working directory."""
    lines = [
        "import os as _labrun_os",
        f"_labrun_os.environ.update({json.dumps(dict(environ))})",
    ]
    if cwd:
        lines.append(f"_labrun_os.chdir({json.dumps(cwd)})")
    lines.append("del _labrun_os")
    return "\n".join(lines)


# Run in a job's kernel after its last cell: what labrun recorded there (the job's metric
# points, its %%mlrun cells' runs) reaches the server before the kernel is shut down, which
# kills it without running its exit handlers.
FLUSH_CODE = (
    "import sys as _labrun_sys\n"
    "if 'labrun.delivery' in _labrun_sys.modules:\n"
    "    _labrun_sys.modules['labrun.delivery'].flush_all(50)\n"
    "del _labrun_sys"
)
