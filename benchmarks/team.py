"""One pool for a whole team (issue 16's "Speed"), side by side in one run.

    python benchmarks/team.py --json docs/team-results.json     # everything
    python benchmarks/team.py --quick                           # a smoke run, small N

(a) A team's pool (``_team_pool.py``): three users' ``labrun server`` processes on one
    PostgreSQL database (a throwaway cluster, as the tests start one), one Dask scheduler,
    two ``labrun worker`` processes; the three users submit 10,000 no-op jobs between them
    (as sweeps of 100, at once). The no-op job claims its attempt and reports itself
    completed through the server, as a notebook job does, without a kernel. Reported: the
    wall time per job from the first submission to the last job's end, and the dispatcher's
    own time inside its rounds per job; each user's share of slot-time while all three had
    jobs queued, against an equal share; the jobs started twice (claimed more than once, or
    dispatched more than once); the time from SIGKILL of the dispatching server to another
    holding the lease, and to a job submitted after the kill running.
(b) Metric ingest on PostgreSQL, three clients at once (``_team_ingest.py``): ``labrun.log``
    through a server, against psycopg's ``COPY`` into the same table and indexes (the
    floor), and against MLflow's ``log_batch`` through ``mlflow server`` on the same
    PostgreSQL. MLflow is installed into its own venv (``benchmarks/.venv-mlflow``), never
    into labrun's.
(c) The scheduling policy alone (``_team_policy.py``), at an institute's scale: 1,000
    workers of 8 GPUs, 200 users in 20 teams, 100,000 queued jobs: CPU time per decision
    and memory (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _team_ingest
import _team_policy
from _team_pool import USERS, team_pool
from support.postgres import PostgresServer

MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = ROOT / "benchmarks" / ".venv-mlflow"


def ensure_mlflow() -> Path:
    """MLflow and PostgreSQL's driver for it, in a venv of their own (once)."""
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing mlflow=={MLFLOW_VERSION} into {MLFLOW_VENV} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    check = subprocess.run(
        [str(python), "-c", "import mlflow, psycopg"], check=False, capture_output=True
    )
    if check.returncode:
        subprocess.run(
            [
                *(str(python), "-m", "pip", "install", "-q"),
                *(f"mlflow=={MLFLOW_VERSION}", "psycopg[binary]"),
            ],
            check=True,
        )
    return python


def port_source(spec: str | None) -> Callable[[], int]:
    """Free ports: any (None), or from a range ``LOW-HIGH`` only."""
    if spec is None:
        from support.postgres import free_port

        return free_port
    low, high = (int(p) for p in spec.split("-"))

    def ports() -> Iterator[int]:
        for port in range(low, high + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            yield port
        raise SystemExit(f"no free port left in {spec}")

    found = ports()
    return lambda: next(found)


def pool_part(
    root: Path,
    port: Callable[[], int],
    jobs: int,
    threads: int,
    noop: str = "1",
    profile: str | None = None,
) -> dict[str, Any]:
    with team_pool(root, port, threads, noop, profile) as pool:
        print(f"{jobs:,} no-op jobs from {len(USERS)} users ...", flush=True)
        run = pool.run_jobs(jobs)
        print_run(run)
        print("SIGKILL of the dispatching server ...", flush=True)
        failover = pool.failover()
        print_failover(failover)
    return {"run": run, "failover": failover, "worker_threads": threads}


def print_run(run: dict[str, Any]) -> None:
    print(
        f"team: {run['jobs']:,} jobs ({run['per_user']}), dispatched by {run['dispatching_server']}'s"
        f" server; submitted in {run['submit_seconds']:.1f} s, all ended after "
        f"{run['wall_seconds']:.1f} s"
    )
    print(f"  wall per job: {run['wall_ms_per_job']:.2f} ms")
    print(
        f"  dispatcher inside its rounds per job: {run['in_rounds_ms_per_job']:.3f} ms "
        f"({run['rounds']:,} rounds)"
    )
    print(
        f"  slot-time shares while all had jobs queued ({run['fair_window_seconds']:.1f} s, "
        f"jobs started {run['fair_window_jobs_started']}): "
        + ", ".join(
            f"{u} {run['slot_share'][u]:.3f} ({run['share_vs_equal'][u]:+.1%})" for u in USERS
        )
    )
    print(
        f"  started twice: {len(run['started_twice'])}; dispatched more than once: "
        f"{len(run['attempts_over_one'])}; not completed: {len(run['not_completed'])}"
    )


def print_failover(fail: dict[str, Any]) -> None:
    running = fail["kill_to_job_running_seconds"]
    print(
        f"  SIGKILL of {fail['killed']}'s server: {fail['took_over']}'s holds the lease after "
        f"{fail['kill_to_new_lease_seconds']:.2f} s; of the jobs submitted after the kill, the "
        f"first ran after {running if running is None else round(running, 2)} s"
    )
    for job in fail["jobs"]:
        print(
            f"    run {job['run_id']}: {job['status']} after {job['after_kill']:.2f} s "
            f"{job['message'] or ''}"[:300]
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run")
    parser.add_argument("--jobs", type=int, help="no-op jobs (10,000; --quick: 300)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--points", type=int, help="metric points (300,000; --quick: 12,000)")
    parser.add_argument(
        "--mlflow-points", type=int, help="points for MLflow (30,000; --quick: 6,000)"
    )
    parser.add_argument("--queued", type=int, help="policy: queued jobs (100,000; --quick: 5,000)")
    parser.add_argument("--rounds", type=int, help="policy: steady rounds (2,000; --quick: 50)")
    parser.add_argument("--only", choices=["pool", "ingest", "policy"], help="one part only")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--no-status",
        action="store_true",
        help="pool: the no-op job returns no status, so the dispatcher skips what it does "
        "after a job that says how it ended (refreshing fair share): what that costs",
    )
    parser.add_argument(
        "--profile",
        choices=["cpu", "wall"],
        help="pool: profile each server with yappi on this clock (the bench extra's); the "
        "profiles (profile-USER.CLOCK.pstat, pstats' format) come out with --keep",
    )
    parser.add_argument("--ports", help="take ports from LOW-HIGH only (default: any free)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="copy the pool's logs into this folder")
    args = parser.parse_args()
    jobs = args.jobs or (300 if args.quick else 10_000)
    points = args.points or (12_000 if args.quick else 300_000)
    mlflow_points = args.mlflow_points or (6_000 if args.quick else 30_000)
    queued = args.queued or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (50 if args.quick else 2_000)
    port = port_source(args.ports)

    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="labrun-bench-team-") as tmp:
        root = Path(tmp)
        if args.only in (None, "pool"):
            try:
                noop = "no-status" if args.no_status else "1"
                figures["pool"] = pool_part(
                    root / "pool", port, jobs, args.threads, noop, args.profile
                )
            finally:
                if args.keep:  # the servers', workers' and scheduler's logs
                    shutil.copytree(
                        root / "pool",
                        args.keep,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sock", "data", "dask*"),
                    )
        if args.only in (None, "ingest"):
            mlflow = None if args.skip_mlflow else ensure_mlflow()
            postgres = PostgresServer.find()
            assert postgres is not None, "PostgreSQL's binaries are not installed"
            postgres.port = port()
            postgres.start()
            try:
                figures["ingest"] = _team_ingest.measure(
                    root, postgres, points, port, mlflow, mlflow_points
                )
            finally:
                postgres.stop()
            print("ingest on PostgreSQL:")
            _team_ingest.print_figures(figures["ingest"])
    if args.only in (None, "policy"):
        print("the scheduling policy alone ...", flush=True)
        figures["policy"] = _team_policy.measure(jobs=queued, rounds=rounds)
        _team_policy.print_figures(figures["policy"])
    figures["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
