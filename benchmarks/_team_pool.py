"""A team's pool, measured: part (a) of benchmarks/team.py.

Three users' ``labrun server`` processes on one PostgreSQL database, one Dask scheduler and
two ``labrun worker`` processes, started as tests/pool/test_team.py starts them. The servers
run through ``_team_server.py``: the real server, with a no-op job function (claim, report
completed) and, for each, a host name of its own, so that a killed scheduler of record is
noticed by its lease's expiry as on separate machines. Every figure is read back from the
store (``runs``, ``run_transitions``, ``leases``) after the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.postgres import PostgresServer
from support.server import LabrunServer, stop_group
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import SubmitJob, SubmitSweep

HERE = Path(__file__).resolve().parent
USERS = ("alice", "bob", "carol")
# Unequal totals, so that fair share has something to do: the shares are compared while
# all three users have jobs queued.
PARTS = (0.40, 0.33, 0.27)
SWEEP = 100  # jobs per `labrun sweep` a user submits


class TeamPool:
    def __init__(self, root: Path, postgres: PostgresServer, port: Callable[[], int]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.postgres = postgres
        self.db_url = postgres.create_database()
        self.engine: Engine = create_engine(self.db_url)
        self.port = port
        self.processes: list[subprocess.Popen[bytes]] = []
        self.servers: dict[str, LabrunServer] = {}
        self.notebook = write_notebook(root / "noop.ipynb", "x", parameters="x = 0")
        self.profile: str | None = None

    def start(self, threads: int, noop: str = "1", profile: str | None = None) -> None:
        self.profile = profile
        scheduler_port = self.port()
        address = f"tcp://127.0.0.1:{scheduler_port}"
        self.processes.append(
            self._spawn(
                "scheduler",
                [
                    *(sys.executable, "-m", "distributed.cli.dask_scheduler"),
                    *("--host", "127.0.0.1", "--port", str(scheduler_port), "--no-dashboard"),
                ],
            )
        )
        for name in ("host-a", "host-b"):
            self.processes.append(
                self._spawn(
                    name,
                    [
                        *(sys.executable, "-m", "labrun.cli", "worker", address, "--name", name),
                        *("--gpus", "0", "--nthreads", str(threads)),
                        *("--local-directory", str(self.root / name)),
                    ],
                )
            )
        for user in USERS:
            server = LabrunServer(
                self.root / user,
                token=f"{user}-token",
                db_url=self.db_url,
                options=[f"--LabRun.dask_scheduler={address}", "--LabRun.warm_kernels=0"],
                env={
                    "LABRUN_USER": user,
                    "LABRUN_BENCH_NOOP_JOBS": noop,
                    "LABRUN_BENCH_HOST": f"{user}-host",
                    "LABRUN_BENCH_STATS": str(self.root / f"stats-{user}.json"),
                    **self._profiling(user, profile),
                },
                program=[sys.executable, str(HERE / "_team_server.py")],
            )
            server.port = self.port()
            server.url = f"http://127.0.0.1:{server.port}/"
            self.servers[user] = server
        for server in self.servers.values():
            server.start(timeout=180)
        wait_for_pool(self.servers[USERS[0]], workers=2, timeout=300)

    def _profiling(self, user: str, clock: str | None) -> dict[str, str]:
        if clock is None:
            return {}
        return {
            "LABRUN_BENCH_PROFILE": str(self._profile_path(user)),
            "LABRUN_BENCH_PROFILE_CLOCK": clock,
        }

    def _profile_path(self, user: str) -> Path:
        return self.root / f"profile-{user}.{self.profile}.pstat"

    def _toggle_profilers(self, stop: bool) -> None:
        """Start, or stop and save, each server's profile (SIGUSR2 toggles it)."""
        if self.profile is None:
            return
        for server in self.servers.values():
            assert server.process is not None
            server.process.send_signal(signal.SIGUSR2)
        if stop:
            for user in self.servers:
                path = self._profile_path(user)
                wait_for(path.exists, 120, f"{path.name} to be saved")

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdout=(self.root / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        for server in self.servers.values():
            stop_group(server.process, grace=15)
        for process in reversed(self.processes):
            stop_group(process, grace=20)
        self.engine.dispose()

    def client(self, user: str) -> Client:
        server = self.servers[user]
        return Client(server.url, server.token, timeout=300)

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params))

    def leader(self) -> str:
        """The user whose server holds the dispatcher's lease."""

        def held() -> str | None:
            rows = self.sql(
                "SELECT \"user\" FROM leases WHERE name = 'dispatcher' "
                "AND expires > extract(epoch FROM clock_timestamp())"
            )
            return rows[0][0] if rows else None

        return wait_for(held, 60, "a server to hold the dispatcher's lease")

    def submit_one(self, user: str) -> int:
        content = json.loads(self.notebook.read_text())
        with self.client(user) as client:
            return client.submit_job(SubmitJob(notebook="noop.ipynb", content=content)).id

    def wait_done(self, count: int, since_id: int, timeout: float) -> None:
        def done() -> bool:
            rows = self.sql(
                "SELECT count(*) FROM runs WHERE kind = 'notebook' AND id > :since "
                "AND status IN ('completed', 'failed', 'cancelled')",
                since=since_id,
            )
            return rows[0][0] >= count

        wait_for(done, timeout, f"{count} jobs to end", interval=0.5)

    def stats(self, user: str) -> dict[str, Any]:
        return json.loads((self.root / f"stats-{user}.json").read_text())

    def run_jobs(self, jobs: int) -> dict[str, Any]:
        """The users submit ``jobs`` between them, as sweeps, at once; until every job ended."""
        # One job each first: the workers' first claims, the servers' first dispatch events.
        warm = [self.submit_one(user) for user in USERS]
        self.wait_done(len(warm), warm[0] - 1, timeout=300)
        last_warm = max(r[0] for r in self.sql("SELECT max(id) FROM runs"))
        leader = self.leader()
        before = self.stats(leader)
        counts = [int(jobs * part) for part in PARTS]
        counts[0] += jobs - sum(counts)
        content = json.loads(self.notebook.read_text())
        errors: list[BaseException] = []

        def submit(user: str, count: int) -> None:
            try:
                with self.client(user) as client:
                    for start in range(0, count, SWEEP):
                        grid = {"x": list(range(start, min(count, start + SWEEP)))}
                        client.submit_sweep(
                            SubmitSweep(notebook="noop.ipynb", content=content, grid=grid)
                        )
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                errors.append(err)

        threads = [
            threading.Thread(target=submit, args=(user, count))
            for user, count in zip(USERS, counts, strict=True)
        ]
        self._toggle_profilers(stop=False)
        started = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted = time.time()
        if errors:
            raise errors[0]
        self.wait_done(jobs, last_warm, timeout=3600)
        ended = time.time()
        # The stats file is written at most every half second, by a round.
        wait_for(
            lambda: self.stats(leader)["dispatched"] - before["dispatched"] >= jobs,
            30,
            "the dispatcher's figures",
        )
        after = self.stats(leader)
        self._toggle_profilers(stop=True)
        figures = self._figures(last_warm, started)
        in_ticks = after["in_ticks"] - before["in_ticks"]
        return {
            "jobs": jobs,
            "per_user": dict(zip(USERS, counts, strict=True)),
            "dispatching_server": leader,
            "submit_seconds": submitted - started,
            "wall_seconds": ended - started,
            "wall_ms_per_job": 1000 * (ended - started) / jobs,
            "in_rounds_ms_per_job": 1000 * in_ticks / jobs,
            "rounds": after["ticks"] - before["ticks"],
            **figures,
        }

    def _figures(self, last_warm: int, started: float) -> dict[str, Any]:
        rows = self.sql(
            'SELECT id, "user", status, attempt, created_at, started_at, ended_at FROM runs '
            "WHERE kind = 'notebook' AND id > :since",
            since=last_warm,
        )
        not_completed = [r.id for r in rows if r.status != "completed"]
        claims = dict(
            self.sql(
                "SELECT t.run_id, count(*) FROM run_transitions t JOIN runs r ON r.id = t.run_id "
                "WHERE t.status = 'running' AND r.kind = 'notebook' AND t.run_id > :since "
                "GROUP BY t.run_id",
                since=last_warm,
            )
        )
        twice = sorted(run_id for run_id, n in claims.items() if n > 1)
        retried = sorted(r.id for r in rows if r.attempt > 1)
        first_start = min(r.started_at for r in rows)
        last_end = max(r.ended_at for r in rows)
        # The window in which every user had jobs queued: from the last user's first
        # submission until the first user's last job started. Each user's slot-time inside
        # it, against a third of the total.
        first_queued = {u: min(r.created_at for r in rows if r.user == u) for u in USERS}
        last_start = {u: max(r.started_at for r in rows if r.user == u) for u in USERS}
        window_start, window_end = max(first_queued.values()), min(last_start.values())

        def inside(start: datetime, end: datetime) -> float:
            return max(0.0, (min(end, window_end) - max(start, window_start)).total_seconds())

        slot = {
            u: sum(inside(r.started_at, r.ended_at) for r in rows if r.user == u) for u in USERS
        }
        started_in = {
            u: sum(1 for r in rows if r.user == u and window_start <= r.started_at <= window_end)
            for u in USERS
        }
        total = sum(slot.values())
        share = {u: slot[u] / total for u in USERS}
        return {
            "not_completed": not_completed,
            "started_twice": twice,
            "attempts_over_one": retried,
            "first_start_to_last_end_seconds": (last_end - first_start).total_seconds(),
            "first_start_after_submit_began_seconds": first_start.timestamp() - started,
            "fair_window_seconds": (window_end - window_start).total_seconds(),
            "fair_window_jobs_started": started_in,
            "slot_seconds": slot,
            "slot_share": share,
            "share_vs_equal": {u: share[u] * len(USERS) - 1 for u in USERS},
        }

    def failover(self) -> dict[str, Any]:
        """SIGKILL the scheduler of record; a job is submitted through another server right
        after. Until another server holds the lease, and until that job is running."""
        leader = self.leader()
        epoch = self.sql("SELECT epoch FROM leases WHERE name = 'dispatcher'")[0][0]
        server = self.servers[leader]
        assert server.process is not None
        killed = time.time()
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(20)
        # Through each server left, right after the kill.
        run_ids = [self.submit_one(user) for user in USERS if user != leader]
        submitted = time.time()

        def moved() -> list[Any] | None:
            rows = self.sql(
                "SELECT run_id, status, time, message FROM run_transitions "
                "WHERE run_id = ANY(:ids) AND status <> 'queued' ORDER BY time",
                ids=run_ids,
            )
            return rows if len({r.run_id for r in rows}) == len(run_ids) else None

        ended = wait_for(moved, 300, f"runs {run_ids} to start after the kill", interval=0.05)
        lease = self.sql("SELECT \"user\", epoch, acquired FROM leases WHERE name = 'dispatcher'")[
            0
        ]
        running = [r.time.timestamp() for r in ended if r.status == "running"]
        return {
            "killed": leader,
            "took_over": lease.user if lease.epoch > epoch else None,
            "lease_seconds": 3.0,
            "submitted_after_kill_seconds": submitted - killed,
            "kill_to_new_lease_seconds": lease.acquired - killed,
            "kill_to_first_job_moved_seconds": ended[0].time.timestamp() - killed,
            "kill_to_job_running_seconds": min(running) - killed if running else None,
            "jobs": [
                {
                    "run_id": r.run_id,
                    "status": r.status,
                    "after_kill": r.time.timestamp() - killed,
                    "message": r.message,
                }
                for r in ended
            ],
        }


@contextmanager
def team_pool(
    root: Path, port: Callable[[], int], threads: int, noop: str = "1", profile: str | None = None
) -> Iterator[TeamPool]:
    postgres = PostgresServer.find()
    if postgres is None:
        raise SystemExit("PostgreSQL's binaries (initdb, pg_ctl) are not installed")
    postgres.port = port()
    postgres.start()
    try:
        pool = TeamPool(root, postgres, port)
        try:
            pool.start(threads, noop, profile)
            yield pool
        finally:
            pool.stop()
    finally:
        postgres.stop()
