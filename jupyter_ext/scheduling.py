"""The scheduling policy: which queued jobs start now. Plain data in, decisions out.

No Dask, no store, no event loop: the dispatcher (``dispatcher.py``) gathers the pool's
workers, the jobs it runs, the users' recent usage and the queues' settings, and asks
:func:`choose`. The rules, each a function here:

* queues by priority, highest first: a lower queue's job starts only when no job of a
  higher one fits (:func:`queue_order`);
* inside a queue, fair share: the user with the fewest slot-hours (a job's GPUs, or 1 for a
  CPU job, times the hours it ran) over the last day goes next, a running job counting at
  least a minute, so two users with fresh jobs alternate (:func:`fair_weights`);
* a user's own queued jobs in a queue: by the job's priority, highest first, then oldest
  first (:class:`Backlog`); a job's priority never overtakes another user's job;
* a per-user limit on GPUs held at once, the lower of the server's and the queue's
  (:func:`user_limit`);
* a job fits when its GPUs are free and one worker has that many (:func:`capacity`).

The running jobs may come as any iterable, summed up again each round, or as a
:class:`Running`, which keeps those sums as jobs start and end: with thousands of jobs
running, a round then costs what its picks cost (``benchmarks/team.py``).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

# Fair share counts the slot-hours of this window.
USAGE_WINDOW = timedelta(days=1)
# A running job weighs at least this many hours in fair share, so a user whose jobs just
# started does not look idle.
RUNNING_FLOOR_HOURS = 1 / 60
# What "no limit" on GPUs is, for an adaptive cluster whose next workers decide what fits.
UNLIMITED = 10**6
# Grants (the GPUs of %%mlrun cells and sessions, ``store/grants.py``) wait in the backlog and
# run beside jobs under ids of their own, below every run's: the policy treats them as jobs,
# and a user's waiting cell goes before their queued jobs, the oldest cell first.
GRANT_IDS = -(2**62)


@dataclass(frozen=True)
class QueuedJob:
    """What the policy needs of a queued job (the notebook stays in the store)."""

    id: int
    user: str
    queue: str
    gpus: int
    priority: int
    attempt: int


@dataclass(frozen=True)
class QueueRule:
    """A queue's settings: its priority, and its own per-user GPU limit (None: none)."""

    priority: int = 0
    max_gpus_per_user: int | None = None


@dataclass(frozen=True)
class Capacity:
    """What the pool can take this round."""

    slots: int  # jobs that may start
    free_gpus: int  # GPUs nobody holds
    biggest: int  # the most GPUs one worker has: a job needing more never fits


class Running:
    """The jobs the pool runs, with what the policy sums over them kept up to date as they
    start and end: the GPUs held in all and by each user (users holding none left out),
    and each user's running jobs' fair-share weight (in slots, so that adding and taking
    away stays exact)."""

    def __init__(self, jobs: Iterable[QueuedJob] = ()) -> None:
        self._jobs: dict[int, QueuedJob] = {}
        self.gpus = 0
        self.held: dict[str, int] = {}
        self.slots: dict[str, int] = {}
        for job in jobs:
            self.add(job)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[QueuedJob]:
        return iter(self._jobs.values())

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._jobs

    def add(self, job: QueuedJob) -> None:
        """``job`` started (again: no change)."""
        if job.id in self._jobs:
            return
        self._jobs[job.id] = job
        self.gpus += job.gpus
        for tally, amount in ((self.held, job.gpus), (self.slots, max(job.gpus, 1))):
            if amount:
                tally[job.user] = tally.get(job.user, 0) + amount

    def discard(self, run_id: int) -> QueuedJob | None:
        """The job ``run_id`` ended; it, or None when it was not running."""
        job = self._jobs.pop(run_id, None)
        if job is None:
            return None
        self.gpus -= job.gpus
        # A user is in a sum while it is not zero: a CPU job neither adds nor takes away
        # GPUs held, so the end of one cannot drop a user whose other jobs hold some.
        for tally, amount in ((self.held, job.gpus), (self.slots, max(job.gpus, 1))):
            if amount:
                tally[job.user] -= amount
                if not tally[job.user]:
                    del tally[job.user]
        return job


# What the policy takes as the running jobs: a tally, or any iterable of them.
RunningJobs: TypeAlias = Running | Iterable[QueuedJob]


def _tally(running: RunningJobs) -> Running:
    return running if isinstance(running, Running) else Running(running)


def capacity(
    workers: Iterable[tuple[int, int]], running: RunningJobs, *, adaptive_backlog: int = 0
) -> Capacity:
    """The free capacity of ``workers`` (each ``(threads, GPUs)``) with ``running`` on them.

    With ``adaptive_backlog``, that many jobs more may go to Dask than the workers there can
    take, so an adaptive cluster sees the demand and starts workers for them; the workers
    yet to start decide what fits, so GPUs do not limit the round.
    """
    tally = _tally(running)
    # One pass: a thousand workers are summed every round.
    threads = gpus = biggest = 0
    for worker_threads, worker_gpus in workers:
        threads += worker_threads
        gpus += worker_gpus
        biggest = max(biggest, worker_gpus)
    slots = threads - len(tally) + adaptive_backlog
    if adaptive_backlog:
        return Capacity(slots=slots, free_gpus=UNLIMITED, biggest=UNLIMITED)
    return Capacity(slots=slots, free_gpus=gpus - tally.gpus, biggest=biggest)


def slot_weight(job: QueuedJob) -> float:
    """What a job that just started adds to its user's fair-share weight."""
    return RUNNING_FLOOR_HOURS * max(job.gpus, 1)


def fair_weights(usage: Mapping[str, float], running: RunningJobs) -> dict[str, float]:
    """Each user's weight in fair share: slot-hours used, plus a floor per running job."""
    weight = dict(usage)
    for user, slots in _tally(running).slots.items():
        weight[user] = weight.get(user, 0.0) + RUNNING_FLOOR_HOURS * slots
    return weight


def held_gpus(running: RunningJobs) -> dict[str, int]:
    """The GPUs each user's running jobs hold."""
    return dict(_tally(running).held)


def queue_order(queues: Iterable[str], rules: Mapping[str, QueueRule]) -> list[str]:
    """Queues by priority, highest first; equal ones by name (a queue without settings,
    priority 0)."""
    return sorted(queues, key=lambda q: (-rules.get(q, QueueRule()).priority, q))


def user_limit(queue: str, rules: Mapping[str, QueueRule], server_limit: int) -> int:
    """The GPUs one user may hold at once in ``queue``: the lower of the server's limit and
    the queue's, where set; 0 when neither is."""
    limits = [server_limit, rules.get(queue, QueueRule()).max_gpus_per_user or 0]
    positive = [n for n in limits if n > 0]
    return min(positive) if positive else 0


class Backlog:
    """The queued jobs by queue and user, each user's by job priority, then age.

    ``ids`` is every job in it, so a job is never queued twice and a cancel finds at once
    whether it has anything to drop.
    """

    def __init__(self) -> None:
        self._heaps: dict[str, dict[str, list[tuple[int, int, QueuedJob]]]] = {}
        self.ids: set[int] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.ids

    def push(self, job: QueuedJob) -> bool:
        """Queue ``job``; False when it is queued already."""
        if job.id in self.ids:
            return False
        self.ids.add(job.id)
        heap = self._heaps.setdefault(job.queue, {}).setdefault(job.user, [])
        heapq.heappush(heap, (-job.priority, job.id, job))
        return True

    def queues(self) -> list[str]:
        return list(self._heaps)

    def heads(self, queue: str) -> Iterator[tuple[str, QueuedJob]]:
        """Each user's next job in ``queue``."""
        for user, heap in self._heaps.get(queue, {}).items():
            yield user, heap[0][2]

    def pop(self, queue: str, user: str) -> QueuedJob:
        """Take ``user``'s next job in ``queue`` out."""
        users = self._heaps[queue]
        job = heapq.heappop(users[user])[2]
        if not users[user]:
            del users[user]
            if not users:
                del self._heaps[queue]
        self.ids.discard(job.id)
        return job

    def discard(self, run_ids: Collection[int]) -> set[int]:
        """Drop the jobs of ``run_ids`` that are queued, in one pass over the backlog
        however many there are (a sweep's thousands cancelled at once); the ids dropped."""
        drop = self.ids.intersection(run_ids)
        if not drop:
            return drop
        self.ids -= drop
        for queue, users in list(self._heaps.items()):
            for user, heap in list(users.items()):
                kept = [entry for entry in heap if entry[1] not in drop]
                if len(kept) == len(heap):
                    continue
                if kept:
                    heapq.heapify(kept)
                    users[user] = kept
                else:
                    del users[user]
            if not users:
                del self._heaps[queue]
        return drop


def choose(
    backlog: Backlog,
    free: Capacity,
    *,
    running: RunningJobs = (),
    usage: Mapping[str, float] | None = None,
    rules: Mapping[str, QueueRule] | None = None,
    max_gpus_per_user: int = 0,
) -> list[QueuedJob]:
    """The jobs to start now, in order, within ``free``; they are taken out of ``backlog``.

    ``running``: the jobs the pool runs (they hold GPUs and weigh in fair share), best a
    :class:`Running` kept by the caller, which the call leaves as it was; ``usage``: each
    user's slot-hours over :data:`USAGE_WINDOW`; ``rules``: the queues' settings;
    ``max_gpus_per_user``: the server's limit (0: none).
    """
    running = _tally(running)
    rules = rules or {}
    held = held_gpus(running)
    weight = fair_weights(usage or {}, running)
    slots, free_gpus = free.slots, free.free_gpus
    chosen: list[QueuedJob] = []
    while slots > 0:
        pick: tuple[float, int, str, str] | None = None
        for queue in queue_order(backlog.queues(), rules):
            limit = user_limit(queue, rules, max_gpus_per_user)
            for user, job in backlog.heads(queue):
                if job.gpus > free_gpus or job.gpus > free.biggest:
                    continue
                if job.gpus and limit and held.get(user, 0) + job.gpus > limit:
                    continue
                key = (weight.get(user, 0.0), job.id, queue, user)
                if pick is None or key < pick:
                    pick = key
            if pick is not None:
                break  # a higher-priority queue had a job that fits
        if pick is None:
            break
        _, _, queue, user = pick
        job = backlog.pop(queue, user)
        chosen.append(job)
        slots -= 1
        free_gpus -= job.gpus
        held[user] = held.get(user, 0) + job.gpus
        weight[user] = weight.get(user, 0.0) + slot_weight(job)
    return chosen
