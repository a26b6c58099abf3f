"""The scheduling policy alone at a large institute's scale: part (c) of benchmarks/team.py.

Plain data in, decisions out (``jupyter_ext/scheduling.py``), as the dispatcher asks it each
round: the pool's free capacity (:func:`scheduling.capacity`) and the jobs to start
(:func:`scheduling.choose`), with every running job and every user's usage passed in.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from typing import Any

from labrun.jupyter_ext import scheduling
from labrun.jupyter_ext.scheduling import Backlog, QueuedJob, QueueRule, Running

# What a job asks for: mostly one GPU, some CPU-only, a few a whole host.
GPU_MIX = ((0, 10), (1, 50), (2, 20), (4, 15), (8, 5))


class Institute:
    """The pool, the users and their queued jobs; ``running`` as the dispatcher keeps it."""

    def __init__(
        self, workers: int, gpus_per_worker: int, users: int, teams: int, jobs: int, seed: int = 0
    ) -> None:
        rng = random.Random(seed)
        # One thread per GPU, as `labrun worker` starts by default.
        self.workers = [(gpus_per_worker, gpus_per_worker)] * workers
        self.users = [f"user{u:03d}" for u in range(users)]
        # Each team has its queue; two teams' queues have a higher priority, and four
        # queues cap a user at 32 GPUs under the server's 64 (200 users at 64 GPUs could
        # hold 12,800: the limits leave the pool full).
        self.team_of = {user: f"team{i % teams:02d}" for i, user in enumerate(self.users)}
        self.rules = {
            f"team{t:02d}": QueueRule(
                priority=1 if t < 2 else 0, max_gpus_per_user=32 if t % 5 == 4 else None
            )
            for t in range(teams)
        }
        self.max_gpus_per_user = 64
        # A day's slot-hours so far, different for every user.
        self.usage = {user: rng.uniform(0, 200) for user in self.users}
        sizes, weights = zip(*GPU_MIX, strict=True)
        self.backlog = Backlog()
        for job_id in range(1, jobs + 1):
            user = rng.choice(self.users)
            self.backlog.push(
                QueuedJob(
                    id=job_id,
                    user=user,
                    queue=self.team_of[user],
                    gpus=rng.choices(sizes, weights)[0],
                    priority=1 if rng.random() < 0.05 else 0,
                    attempt=0,
                )
            )
        self.running = Running()
        self.rng = rng

    def round(self, tally: bool = True) -> list[QueuedJob]:
        """One dispatch round: what the dispatcher's ``choose`` does, with the running jobs
        as a tally kept between rounds, or (``tally=False``) as the dispatcher passes them
        today: a list made from its jobs in flight, summed up again each round."""
        running = self.running if tally else list(self.running)
        free = scheduling.capacity(self.workers, running)
        chosen = scheduling.choose(
            self.backlog,
            free,
            running=running,
            usage=self.usage,
            rules=self.rules,
            max_gpus_per_user=self.max_gpus_per_user,
        )
        for job in chosen:
            self.running.add(job)
        return chosen

    def end_one(self) -> None:
        """A random running job ends (the round after it is a steady-state decision)."""
        self.running.discard(self.rng.choice(list(self.running)).id)


def measure(
    workers: int = 1_000,
    gpus_per_worker: int = 8,
    users: int = 200,
    teams: int = 20,
    jobs: int = 100_000,
    rounds: int = 2_000,
) -> dict[str, Any]:
    build_start = time.perf_counter()
    institute = Institute(workers, gpus_per_worker, users, teams, jobs)
    build = time.perf_counter() - build_start

    # The first round fills an empty pool: thousands of jobs chosen in one call. CPU time
    # is the figure: on a shared machine the wall time counts the other processes' turns.
    start, cpu = time.perf_counter(), time.process_time()
    first = institute.round()
    first_seconds, first_cpu = time.perf_counter() - start, time.process_time() - cpu

    # Then the pool is full and each round follows one job's end: the decision the
    # dispatcher makes all day long. Timed without the bookkeeping of who ended.
    # Alternately with the running jobs as a list (as the dispatcher passes them today)
    # and as a tally, so that both see the same load.
    gc.collect()
    per_round: list[float] = []
    wall: list[float] = []
    as_list: list[float] = []
    started = 0
    for i in range(rounds):
        institute.end_one()
        start, cpu = time.perf_counter(), time.process_time()
        chosen = institute.round(tally=i % 2 == 0)
        (per_round if i % 2 == 0 else as_list).append(time.process_time() - cpu)
        if i % 2 == 0:
            wall.append(time.perf_counter() - start)
        started += len(chosen)
    per_round.sort()

    # Memory, in a second pass of its own: tracemalloc slows every allocation.
    gc.collect()
    tracemalloc.start()
    traced = Institute(workers, gpus_per_worker, users, teams, jobs)
    backlog_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    traced.round()
    for _ in range(min(rounds, 200)):
        traced.end_one()
        traced.round()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "workers": workers,
        "gpus": workers * gpus_per_worker,
        "users": users,
        "teams": teams,
        "queued_jobs": jobs,
        "build_seconds": build,
        "first_round_jobs": len(first),
        "first_round_ms": 1000 * first_cpu,
        "first_round_wall_ms": 1000 * first_seconds,
        "first_round_ms_per_job": 1000 * first_cpu / max(1, len(first)),
        "running_after_first_round": len(first),
        "steady_rounds": rounds,
        "steady_jobs_started": started,
        "steady_ms_median": 1000 * statistics.median(per_round),
        "steady_ms_p99": 1000 * per_round[int(0.99 * (len(per_round) - 1))],
        "steady_ms_max": 1000 * per_round[-1],
        "steady_ms_per_job_started": 1000 * (sum(per_round) + sum(as_list)) / max(1, started),
        "steady_wall_ms_median": 1000 * statistics.median(wall),
        "steady_as_list_ms_median": 1000 * statistics.median(as_list),
        "running_at_end": len(institute.running),
        "memory_backlog_mib": backlog_bytes / 2**20,
        "memory_rounds_peak_mib": peak / 2**20,
    }


def print_figures(f: dict[str, Any]) -> None:
    print(
        f"policy: {f['workers']:,} workers ({f['gpus']:,} GPUs), {f['users']} users in "
        f"{f['teams']} teams, {f['queued_jobs']:,} queued jobs"
    )
    print(
        f"  first round (empty pool): {f['first_round_jobs']:,} jobs chosen in "
        f"{f['first_round_ms']:.1f} ms ({f['first_round_ms_per_job']:.3f} ms a job)"
    )
    print(
        f"  steady state, one round after each job's end ({f['steady_rounds']:,} rounds, "
        f"{f['steady_jobs_started']:,} jobs started): median {f['steady_ms_median']:.3f} ms, "
        f"p99 {f['steady_ms_p99']:.3f} ms, max {f['steady_ms_max']:.3f} ms of CPU "
        f"(wall: median {f['steady_wall_ms_median']:.3f} ms); with the running jobs as a "
        f"list, as the dispatcher passes them today: median {f['steady_as_list_ms_median']:.3f} ms"
    )
    print(
        f"  memory: backlog {f['memory_backlog_mib']:.1f} MiB; peak over the rounds "
        f"{f['memory_rounds_peak_mib']:.1f} MiB (tracemalloc)"
    )
