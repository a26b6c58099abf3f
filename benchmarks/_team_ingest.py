"""Metric ingest on PostgreSQL, three clients at once: part (b) of benchmarks/team.py.

(1) labrun: three processes, each ``labrun.init`` + ``labrun.log`` in a loop + ``finish()``,
    through one ``labrun server`` whose store is PostgreSQL, from the moment all three are let
    go until the last ``finish()`` returned (every point committed).
(2) The floor: psycopg's ``COPY`` of the same rows (three runs' worth) into the same
    ``metrics`` table, with the same indexes (the migrated schema), in one transaction.
(3) MLflow ``log_batch`` (1,000 metrics a request, its limit), three client processes at
    once, against ``mlflow server`` whose backend store is the same PostgreSQL cluster;
    fewer points (MLflow takes minutes for what labrun takes seconds; its rate is per point).

The client side of (1) is this file too: ``python _team_ingest.py client URL TOKEN POINTS``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ingest import mlflow_server
from support.postgres import PostgresServer
from support.server import LabrunServer

from labrun.client import Client
from labrun.jupyter_ext.store.database import make_engine, upgrade
from labrun.jupyter_ext.store.tables import Project, Run
from labrun.models import CreateRun

HERE = Path(__file__).resolve().parent
KEYS = ("loss", "acc", "lr", "grad")
CLIENTS = 3


def client(url: str, token: str, points: int) -> None:
    """One client: its own run, ``points`` points, 4 metrics a call."""
    import labrun

    api = Client(url, token)
    run = labrun.init(name="ingest", client=api)
    steps = points // len(KEYS)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1), "acc": i / steps, "lr": 0.01, "grad": 0.5}, step=i)
    logged = time.perf_counter() - start
    run.finish(timeout=600)
    elapsed = time.perf_counter() - start
    stored = sum(len(s.steps) for s in api.metrics(run.id, max_points="all").series)
    print(json.dumps({"points": stored, "seconds": elapsed, "log_calls_seconds": logged}))


def at_once(commands: list[list[str]], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Start every command, wait until each says ``ready``, let them all go; their JSON."""
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for command in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{proc.args!r} did not start: {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=3600)
            if proc.returncode:
                raise RuntimeError(f"{proc.args!r} failed ({proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # what is left of the others when one failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def combined(results: list[dict[str, Any]]) -> dict[str, Any]:
    """All clients together: every point over the time the slowest took."""
    points = sum(r["points"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return {
        "points": points,
        "seconds": seconds,
        "points_per_s": points / seconds,
        "clients": results,
    }


def labrun_ingest(root: Path, db_url: str, points: int, port: int) -> dict[str, Any]:
    server = LabrunServer(root / "ingest-server", db_url=db_url)
    server.port = port
    server.url = f"http://127.0.0.1:{port}/"
    server.start(timeout=180)
    try:
        # The project first: three first runs of a new project at once on PostgreSQL make
        # it three times, and two get a 500 (a unique name; not fixed here, see
        # docs/benchmarks.md).
        with Client(server.url, server.token) as api:
            api.create_run(CreateRun(name="project", kind="script"))
        each = points // CLIENTS
        command = [sys.executable, __file__, "client", server.url, server.token, str(each)]
        return combined(at_once([command] * CLIENTS))
    finally:
        server.stop()


def copy_floor(db_url: str, points: int) -> dict[str, Any]:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        project = conn.execute(insert(Project).values(name="p")).inserted_primary_key[0]
        runs = [
            conn.execute(
                insert(Run).values(project_id=project, kind="script", status="running", user="u")
            ).inserted_primary_key[0]
            for _ in range(CLIENTS)
        ]
    engine.dispose()
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    now = time.time()
    steps = points // CLIENTS // len(KEYS)
    rows = [
        (run_id, key, i, 1.0 / (i + 1), now)
        for run_id in runs
        for i in range(steps)
        for key in KEYS
    ]
    start = time.perf_counter()
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy("COPY metrics (run_id, key, step, value, time) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    seconds = time.perf_counter() - start
    return {"points": len(rows), "seconds": seconds, "points_per_s": len(rows) / seconds}


def mlflow_ingest(
    root: Path, postgres: PostgresServer, points: int, port: int, python: Path
) -> dict[str, Any]:
    dsn = f"host=127.0.0.1 port={postgres.port} user=labrun dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mlflow")
    store = root / "mlflow"
    store.mkdir()
    backend = f"postgresql://labrun@127.0.0.1:{postgres.port}/mlflow"
    with mlflow_server(python.parent / "mlflow", backend, store, port, 300) as uri:
        command = [
            str(python),
            str(HERE / "_mlflow_client.py"),
            *(uri, "batch", str(points // CLIENTS), "--barrier"),
        ]
        return combined(at_once([command] * CLIENTS))


def measure(
    root: Path,
    postgres: PostgresServer,
    points: int,
    port: Callable[[], int],
    mlflow_python: Path | None,
    mlflow_points: int,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"points": points, "clients": CLIENTS}
    print(f"labrun.log -> labrun server -> PostgreSQL, {CLIENTS} clients ...", flush=True)
    figures["labrun"] = labrun_ingest(root, postgres.create_database(), points, port())
    print("floor: psycopg COPY into the same table ...", flush=True)
    figures["copy_floor"] = copy_floor(postgres.create_database(), points)
    if mlflow_python is not None:
        print(f"MLflow log_batch -> mlflow server -> PostgreSQL, {CLIENTS} clients ...", flush=True)
        figures["mlflow_batch"] = mlflow_ingest(
            root, postgres, mlflow_points, port(), mlflow_python
        )
    rate = figures["labrun"]["points_per_s"]
    figures["ratios"] = {"labrun_vs_copy": rate / figures["copy_floor"]["points_per_s"]}
    if "mlflow_batch" in figures:
        figures["ratios"]["labrun_vs_mlflow_batch"] = rate / figures["mlflow_batch"]["points_per_s"]
    return figures


def print_figures(f: dict[str, Any]) -> None:
    for name, label in (
        ("labrun", "labrun.log, 3 clients"),
        ("copy_floor", "floor: psycopg COPY"),
        ("mlflow_batch", "MLflow log_batch, 3 clients"),
    ):
        if name in f:
            g = f[name]
            print(
                f"  {label:<30}{g['points']:>10,}{g['seconds']:>9.2f} s{g['points_per_s']:>12,.0f}/s"
            )
    for name, value in f["ratios"].items():
        print(f"  {name}: {value:.2f}x")


if __name__ == "__main__" and sys.argv[1:2] == ["client"]:
    client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
