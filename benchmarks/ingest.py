"""Metric ingest, side by side on one machine: labrun, MLflow, and the database's floor.

    python benchmarks/ingest.py                # everything (installs MLflow into its own venv)
    python benchmarks/ingest.py --skip-mlflow  # labrun, the floor and the list query only

(a) labrun: ``labrun.log`` in a training loop, through a real ``labrun server`` into SQLite,
    from the first ``log`` call until ``finish()`` returns (every point committed).
(b) MLflow against ``mlflow server`` over HTTP with a SQLite backend: ``log_metric`` per
    point, and ``log_batch`` (1,000 metrics per request, MLflow's limit).
(c) The floor: the same rows into the same table and indexes with SQLAlchemy Core
    ``executemany`` in one transaction.
(d) Listing 100 runs sorted by a metric out of 100,000, over HTTP: the median latency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.server import LabrunServer

import labrun
from labrun.client import Client
from labrun.jupyter_ext.store.database import make_engine, upgrade
from labrun.jupyter_ext.store.tables import Metric, MetricSummary, Param, Project, Run

KEYS = ("loss", "acc", "lr", "grad")
MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = ROOT / "benchmarks" / ".venv-mlflow"


def labrun_ingest(workdir: Path, points: int) -> dict[str, float]:
    server = LabrunServer(workdir / "labrun")
    server.start()
    try:
        client = Client(server.url, server.token)
        run = labrun.init(name="ingest", client=client)
        steps = points // len(KEYS)
        start = time.perf_counter()
        for i in range(steps):
            run.log({"loss": 1.0 / (i + 1), "acc": i / steps, "lr": 0.01, "grad": 0.5}, step=i)
        logged = time.perf_counter() - start
        run.finish(timeout=600)
        elapsed = time.perf_counter() - start
        stored = sum(len(s.steps) for s in client.metrics(run.id, max_points="all").series)
    finally:
        server.stop()
    assert stored == steps * len(KEYS), (stored, points)
    return {"points": stored, "seconds": elapsed, "log_calls_seconds": logged}


def floor(workdir: Path, points: int) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{workdir / 'floor.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        project = conn.execute(insert(Project).values(name="p")).inserted_primary_key[0]
        run_id = conn.execute(
            insert(Run).values(project_id=project, kind="script", status="running", user="u")
        ).inserted_primary_key[0]
    now = time.time()
    rows = [
        {"run_id": run_id, "key": key, "step": i, "value": 1.0 / (i + 1), "time": now}
        for i in range(points // len(KEYS))
        for key in KEYS
    ]
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(Metric), rows)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {"points": len(rows), "seconds": elapsed}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mlflow() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing mlflow=={MLFLOW_VERSION} into {MLFLOW_VENV} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}"], check=True
        )
    return python


@contextmanager
def mlflow_server(
    mlflow: Path, backend: str, store: Path, port: int, timeout: float
) -> Iterator[str]:
    """``mlflow server`` on the backend store ``backend``: its URI once it answers; stopped
    after."""
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend,
            "--default-artifact-root",
            str(store / "artifacts"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        stdout=(store / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((store / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def mlflow_ingest(workdir: Path, mode: str, points: int) -> dict[str, float]:
    python = ensure_mlflow()
    store = workdir / f"mlflow-{mode}"
    store.mkdir()
    backend = f"sqlite:///{store / 'mlflow.db'}"
    with mlflow_server(MLFLOW_VENV / "bin" / "mlflow", backend, store, free_port(), 120) as uri:
        out = subprocess.run(
            [str(python), str(ROOT / "benchmarks" / "_mlflow_client.py"), uri, mode, str(points)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def seed_runs(url: str, runs: int) -> None:
    """100,000 runs with a latest 'loss' and a 'lr' parameter, written in bulk."""
    engine = make_engine(url)
    upgrade(engine)
    rng = random.Random(0)
    with engine.begin() as conn:
        project = conn.execute(insert(Project).values(name="big")).inserted_primary_key[0]
        conn.execute(
            insert(Run),
            [
                {
                    "id": i,
                    "project_id": project,
                    "name": f"run-{i}",
                    "kind": "script",
                    "status": "completed",
                    "user": f"user{i % 7}",
                }
                for i in range(1, runs + 1)
            ],
        )
        conn.execute(
            insert(MetricSummary),
            [
                {
                    "run_id": i,
                    "key": "loss",
                    "step": 100,
                    "value": rng.random(),
                    "min": 0.0,
                    "max": 1.0,
                    "count": 100,
                    "time": 0.0,
                }
                for i in range(1, runs + 1)
            ],
        )
        conn.execute(
            insert(Param),
            [
                {"run_id": i, "key": "lr", "value": 10 ** -rng.randint(1, 5), "value_num": None}
                for i in range(1, runs + 1)
            ],
        )
    engine.dispose()


def list_latency(workdir: Path, runs: int, repeats: int) -> dict[str, float]:
    url = f"sqlite:///{workdir / 'list.db'}"
    seed_runs(url, runs)
    server = LabrunServer(workdir / "list-server", db_url=url)
    server.start()
    try:
        headers = {"Authorization": f"token {server.token}"}
        results = {}
        with httpx.Client(
            base_url=f"{server.url}labrun/api/v1", headers=headers, timeout=60
        ) as http:
            for sort in ("metrics.loss", "-created_at"):
                timings = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    response = http.get("/runs", params={"sort": sort, "limit": 100})
                    timings.append(time.perf_counter() - start)
                    response.raise_for_status()
                assert len(response.json()["runs"]) == 100 and response.json()["total"] == runs
                results[sort] = statistics.median(timings) * 1000
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--points",
        type=int,
        default=200_000,
        help="points for labrun, MLflow log_batch and the floor",
    )
    parser.add_argument(
        "--mlflow-call-points",
        type=int,
        default=2_000,
        help="points for MLflow's per-call log_metric (about 70/s)",
    )
    parser.add_argument(
        "--runs", type=int, default=100_000, help="runs in the store for the list query"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as tmp:
        workdir = Path(tmp)
        print(f"labrun.log -> labrun server -> SQLite, {args.points:,} points ...", flush=True)
        figures["labrun"] = labrun_ingest(workdir, args.points)
        print(f"floor: SQLAlchemy Core executemany, {args.points:,} rows ...", flush=True)
        figures["floor"] = floor(workdir, args.points)
        if not args.skip_mlflow:
            print(f"MLflow log_batch over HTTP, {args.points:,} points ...", flush=True)
            figures["mlflow_batch"] = mlflow_ingest(workdir, "batch", args.points)
            print(
                f"MLflow log_metric per call over HTTP, {args.mlflow_call_points:,} points ...",
                flush=True,
            )
            figures["mlflow_per_call"] = mlflow_ingest(workdir, "per_call", args.mlflow_call_points)
        print(
            f"list 100 of {args.runs:,} runs over HTTP, {args.repeats} times per sort ...",
            flush=True,
        )
        figures["list_ms"] = list_latency(workdir, args.runs, args.repeats)

    def rate(name: str) -> float:
        f = figures[name]
        assert isinstance(f, dict)
        return f["points"] / f["seconds"]

    print()
    print(f"{'ingest':<34}{'points':>10}{'seconds':>10}{'points/s':>12}")
    for name, label in [
        ("labrun", "labrun.log (end to end)"),
        ("mlflow_per_call", "MLflow log_metric, per call"),
        ("mlflow_batch", "MLflow log_batch"),
        ("floor", "floor: Core executemany"),
    ]:
        if name in figures:
            f = figures[name]
            assert isinstance(f, dict)
            print(f"{label:<34}{f['points']:>10,}{f['seconds']:>10.2f}{rate(name):>12,.0f}")
    print()
    labrun_rate = rate("labrun")
    print(f"labrun / floor: {labrun_rate / rate('floor'):.2f}x")
    if "mlflow_batch" in figures:
        print(f"labrun / MLflow log_metric per call: {labrun_rate / rate('mlflow_per_call'):,.0f}x")
        print(f"labrun / MLflow log_batch: {labrun_rate / rate('mlflow_batch'):.1f}x")
    for sort, ms in figures["list_ms"].items():  # type: ignore[union-attr]
        print(f"list 100 of {args.runs:,} runs sorted by {sort}: median {ms:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
