"""Self-fencing: a worker cut off from the server stops the jobs the server gives to another.

The server counts a worker gone once its last heartbeat is ``c.LabRun.worker_timeout`` old,
and loses its jobs (dispatching them again elsewhere) once it has seen that for
``LOST_GRACE`` more seconds (``jupyter_ext/dispatcher.py``). A worker on the far side of a
cut link cannot be told. It can only notice that its own heartbeats stopped getting through,
and stop those jobs itself first, as a partitioned node of any cluster does: otherwise the
job's first attempt runs on beside its second until Dask drops the worker, and after.

Both times come from the one setting, ``worker_timeout``, which the server hands its workers
with their plugins: see :func:`fence_after`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from labrun.delivery import abandon
from labrun.models import AttemptRef

if TYPE_CHECKING:
    from .plugins import CellRuns, Kernels

# The share of the worker timeout after which a worker whose heartbeats do not get through
# stops its jobs. Two thirds, as ZooKeeper's clients count their session lost after two
# thirds of its timeout:
# - early enough: the server loses the jobs no sooner than worker_timeout + LOST_GRACE after
#   the last heartbeat it recorded, and the worker counts from when it *sent* that heartbeat
#   (never later), so the fence has worker_timeout / 3 + LOST_GRACE to act: 13 s with the
#   default 30 s, 6 s with the 9 s of the tests across hosts. It acts from a thread of its
#   own that waits on nothing else (no request, no lock of the heartbeat's), wakes a few
#   times a second and kills the kernels outright, so a starved CPU delays it by scheduling
#   latency, far below those seconds.
# - late enough: heartbeats go every 2 s (Telemetry.post_interval), so two thirds of the 9 s
#   the tests use is three of them missed in a row, and of the default 30 s, ten. A worker
#   that is only slow keeps its jobs.
FENCE_SHARE = 2 / 3
# How often the fence looks at the time of the last heartbeat that got through.
FENCE_CHECK = 0.25
# Past the fence time, the worker asks the Dask scheduler whether it answers (this long at
# most, and again this often while it does). A worker that reaches the scheduler is not cut
# off: the server is away (stopped, culled, restarting), and no server runs its jobs
# elsewhere meanwhile; were one up and out of this worker's reach only, it stops the jobs on
# this worker through the scheduler before it runs them again (``jupyter_ext/dispatcher.py``).
# So the jobs go on to their end: work outlives its server. The probe's time is taken out of
# the fence's margin above: the fence acts within fence_after + SCHEDULER_PROBE.
SCHEDULER_PROBE = 2.0


def fence_after(worker_timeout: float) -> float:
    """Seconds without a heartbeat answered after which a worker stops its jobs: safely
    less than the ``worker_timeout`` (+ ``LOST_GRACE``) after which the server loses them."""
    return worker_timeout * FENCE_SHARE


class Fence:
    """When the worker last reached the server, and whether it is cut off now.

    :meth:`reached` with the time a heartbeat that got through was sent; :meth:`check` with
    the time now says once, when the silence first exceeds ``after``, that the jobs must stop.
    A heartbeat sent since then that gets through lifts the fence: the worker takes work.
    """

    def __init__(self, after: float, now: float | None = None) -> None:
        self.after = after
        self._last = time.monotonic() if now is None else now
        self._fenced = False
        self._lock = threading.Lock()

    @property
    def fenced(self) -> bool:
        return self._fenced

    def silence(self, now: float) -> float:
        """Seconds since the last heartbeat that got through was sent."""
        return now - self._last

    def reached(self, sent: float, now: float) -> bool:
        """A heartbeat sent at ``sent`` got through (answered at ``now``); True when that
        lifts the fence."""
        with self._lock:
            # An answer that took long may come after a later one's: the latest send counts.
            self._last = max(self._last, sent)
            # One sent before the silence began to count would leave it over the fence
            # time, and fence the worker again at once.
            if not self._fenced or now - self._last > self.after:
                return False
            self._fenced = False
            return True

    def due(self, now: float) -> bool:
        """Whether the silence exceeds ``after`` and the jobs were not stopped yet."""
        with self._lock:
            return not self._fenced and now - self._last > self.after

    def check(self, now: float) -> bool:
        """True once the silence exceeds ``after``: stop the jobs now (once per cut)."""
        with self._lock:
            if self._fenced or now - self._last <= self.after:
                return False
            self._fenced = True
            return True


def abandon_all(kernels: Kernels, cells: CellRuns, reason: str) -> list[AttemptRef]:
    """Give up every job this worker runs for the server: the notebook jobs (their kernels
    killed) and the cells the server dispatched (re-runs, interrupted). The attempts it gave
    up, which the worker's next heartbeats tell the server (``RegisterWorker.abandoned``).

    A ``%%mlrun`` cell a kernel sent here itself goes on: the server runs it nowhere else,
    and it reports once the server is back.
    """
    stopped = []
    for run_id, job in list(kernels.jobs.items()):
        job.abandon(reason)
        stopped.append(AttemptRef(run_id=run_id, attempt=job.attempt))
    for cell in list(cells.cells.values()):
        cell_run, attempt = cell.run_id, cell.attempt
        if attempt is None or cell_run is None:
            continue
        from .tasks import stop_cell  # a re-run is running: its module is imported

        abandon(cell_run, attempt)
        stop_cell(cell.key, reason)
        stopped.append(AttemptRef(run_id=cell_run, attempt=attempt))
    return stopped
