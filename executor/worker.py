"""What the server installs on each worker of its pool: :func:`worker_plugins`, in order.

Each plugin does one job (see :mod:`.plugins` and :mod:`.telemetry`); :class:`WarmUp`
prepares, off the worker's event loop, what the first cells and jobs will need.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from .plugins import (
    POOL_TOKEN_KEY,
    SERVER_KEY,
    CellRuns,
    Devices,
    Html,
    Kernels,
    LabrunPlugin,
    ServerLink,
)
from .telemetry import Telemetry

if TYPE_CHECKING:
    from distributed import Worker

__all__ = ["POOL_TOKEN_KEY", "SERVER_KEY", "WarmUp", "worker_plugins"]

logger = logging.getLogger("labrun.executor")


class WarmUp(LabrunPlugin):
    """Prepare what runs will need, off the worker's event loop, the soonest needed first.

    A worker that just joined is soon asked for a %%mlrun cell (the first cell of a
    notebook opened as the server started): IPython's shell first. Then the warm
    kernels notebook jobs take (a zygote importing ipykernel, then a kernel forked),
    then nbconvert's templates (half a second) and the package list (a fifth). All
    of it is CPU a starting pool shares with that first cell, so none of it comes
    before the cell's own imports; a job that comes sooner starts its kernel itself.
    """

    name = "labrun-warm-up"

    def setup(self, worker: Worker) -> None:
        self._start(worker)
        self.kernels = self.use(Kernels)
        self.html = self.use(Html)
        self.devices = self.use(Devices)
        self._stop = threading.Event()
        threading.Thread(target=self._warm_up, name="labrun-warm-up", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def _warm_up(self) -> None:
        # Imported here, on this thread, not on the event loop that unpickles the plugin:
        # IPython, nbconvert and papermill take seconds to import on a busy machine.
        try:
            from . import execution  # noqa: F401 - what a cell runs in
            from .shell import shell

            shell()  # IPython's shell, with labrun's magics loaded in it
        except Exception:  # the cell itself reports the same failure
            logger.exception("labrun: could not prepare the cell runner")
        if self._stop.is_set():
            return  # torn down meanwhile
        self.kernels.pool.start()
        try:
            import nbformat

            self.html.render(nbformat.v4.new_notebook())
            self.devices.read_packages()
            from . import runner  # noqa: F401 - papermill, for the first notebook job
        except Exception:  # the first job does it again, and reports it
            logger.exception("labrun: warming up nbconvert failed")


def worker_plugins(
    server_url: str,
    grant: dict[str, Any],
    *,
    kernels: int = 1,
    sample_interval: float = 1.0,
    post_interval: float = 2.0,
    worker_timeout: float = 30.0,
) -> list[WorkerPlugin]:
    """The plugins to register, in this order: each is set up after those it uses.

    ``grant`` is the pool's token (see :class:`~.plugins.ServerLink`); ``kernels`` the warm
    kernels kept per worker thread; ``worker_timeout`` the server's, which the workers'
    fence time derives from (:mod:`.fencing`).
    """
    return [
        ServerLink(server_url, grant),
        Devices(),
        CellRuns(),
        Kernels(server_url, kernels),
        Html(),
        Telemetry(
            sample_interval=sample_interval,
            post_interval=post_interval,
            worker_timeout=worker_timeout,
        ),
        WarmUp(),
    ]
