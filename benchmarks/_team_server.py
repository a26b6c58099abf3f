"""``labrun server`` for benchmarks/team.py: the real server, with two benchmark-only changes
made here, before the server starts, so that nothing in labrun itself reads them.

- ``LABRUN_BENCH_NOOP_JOBS=1``: a notebook job runs :func:`noop_job` instead of the notebook
  runner. It does what a job does with the server (claim its attempt, report it completed,
  through the worker's link to the scheduler of record), without a kernel or a notebook. It
  is pickled by value (this file runs as ``__main__``), so the workers need nothing extra.
  ``LABRUN_BENCH_NOOP_JOBS=no-status``: the same, returning no status (as benchmarks/jobs.py's
  no-op; a notebook job's task returns one), so the dispatcher does not refresh fair share
  after each job.
- ``LABRUN_BENCH_HOST=NAME``: the server's id names host NAME, as a server on another
  machine would. A dead lease holder "of this machine" is noticed at once (its process is
  gone); on other hosts the lease must expire. The benchmark measures that case.

It also adds up, per server, the time its dispatcher spends inside its rounds, and writes it
with the number of jobs dispatched to ``LABRUN_BENCH_STATS`` (JSON) about every half second.

- ``LABRUN_BENCH_PROFILE=PATH``: profile the server with yappi (every thread: the event
  loop's and the store's), from one SIGUSR2 until the next (the benchmark sends them around
  the run it measures, so the start and the takeover stay out; Jupyter Server has SIGUSR1),
  on the clock ``LABRUN_BENCH_PROFILE_CLOCK`` names (``cpu``, the default, or ``wall``).
  At the second it saves the functions' figures to PATH in pstats' format (``PATH.main``: the event loop's
  thread alone) and each thread's total to ``PATH.threads``. yappi's figures are only whole
  once it stopped (saved while it runs, calls go missing), hence the signals. yappi is the
  ``bench`` extra's.

    python benchmarks/_team_server.py --port ... --db-url ...   # as `labrun server`
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def noop_job(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A notebook job with no notebook: claim, then report the run completed, both as the
    notebook runner does (the claim through the worker's link, the end through its outbox)."""
    from labrun.delivery import Outbox, UpdateRunOp
    from labrun.errors import Conflict, NotFound
    from labrun.executor.plugins import ServerLink
    from labrun.models import ClaimRun, RunStatus, UpdateRun

    run_id = int(spec["run_id"])
    link = ServerLink.of()
    claim = ClaimRun(attempt=spec["attempt"], worker=link.id, devices=[], environment={})
    try:
        link.claim(run_id, claim)
    except (Conflict, NotFound) as err:
        return {"run_id": run_id, "status": "superseded", "error": str(err)}
    outbox = Outbox.of(link.client)
    end = UpdateRun(status=RunStatus.completed, attempt=spec["attempt"])
    outbox.put(UpdateRunOp(run_id=run_id, body=end))
    outbox.flush(60)
    if os.environ.get("LABRUN_BENCH_NOOP_JOBS") == "no-status":
        return None  # as benchmarks/jobs.py's no-op: the dispatcher settles nothing after it
    return {"run_id": run_id, "status": "completed"}


def instrument(stats_path: Path) -> None:
    from labrun.jupyter_ext.dispatcher import Dispatcher

    totals = {"in_ticks": 0.0, "ticks": 0, "written": 0.0}
    tick = Dispatcher.tick

    async def timed_tick(self: Dispatcher) -> None:
        start = time.perf_counter()
        try:
            await tick(self)
        finally:
            totals["in_ticks"] += time.perf_counter() - start
            totals["ticks"] += 1
            if time.monotonic() - totals["written"] > 0.5:
                totals["written"] = time.monotonic()
                figures = {
                    "in_ticks": totals["in_ticks"],
                    "ticks": totals["ticks"],
                    "dispatched": self.dispatched,
                    "inflight": len(self.inflight),
                    "time": time.time(),
                }
                stats_path.write_text(json.dumps(figures))

    Dispatcher.tick = timed_tick


def profile(path: Path, clock: str) -> None:
    import signal

    import yappi

    def toggle(*_: object) -> None:
        if not yappi.is_running():
            yappi.set_clock_type(clock)
            yappi.start(builtins=False, profile_threads=True)
            return
        yappi.stop()
        threads = yappi.get_thread_stats()
        with path.with_name(path.name + ".threads").open("w") as out:
            threads.print_all(out=out)
        main = next(t.id for t in threads if t.name == "_MainThread")
        yappi.get_func_stats(filter={"ctx_id": main}).save(f"{path}.main", type="pstat")
        yappi.get_func_stats().save(f"{path}.part", type="pstat")
        Path(f"{path}.part").replace(path)  # last: the benchmark waits for this one

    signal.signal(signal.SIGUSR2, toggle)


def main() -> None:
    if os.environ.get("LABRUN_BENCH_PROFILE"):
        clock = os.environ.get("LABRUN_BENCH_PROFILE_CLOCK", "cpu")
        profile(Path(os.environ["LABRUN_BENCH_PROFILE"]), clock)
    if os.environ.get("LABRUN_BENCH_HOST"):
        from labrun.jupyter_ext.store import leases

        leases._PROCESS = leases._PROCESS.replace(
            leases.socket.gethostname(), os.environ["LABRUN_BENCH_HOST"], 1
        )
    if os.environ.get("LABRUN_BENCH_NOOP_JOBS"):
        from labrun.jupyter_ext.dispatcher import Dispatcher

        # A plain function on the class would be bound to the dispatcher: keep it plain.
        Dispatcher.job_function = staticmethod(noop_job)
    if os.environ.get("LABRUN_BENCH_STATS"):
        instrument(Path(os.environ["LABRUN_BENCH_STATS"]))

    from labrun.cli.server import server

    server.main(args=sys.argv[1:], prog_name="labrun server")


if __name__ == "__main__":
    main()
