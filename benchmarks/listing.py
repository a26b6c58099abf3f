"""Every way of listing runs, over HTTP, with 1,000,000 runs in the store.

    python benchmarks/listing.py                       # builds the store the first time
    python benchmarks/listing.py --json docs/listing-results.json
    python benchmarks/listing.py --runs 100000         # a smaller store

The store is a SQLite file under /tmp (``--store``), built once with bulk inserts and
kept: 1,000,000 runs in 5 projects, 7 users, 3 kinds and 4 statuses, each run with two
parameters (``lr``, a number; ``optimizer``, a string), a ``loss`` curve of 5 points and
its summary. Its name carries the schema revision, so a new migration builds a new one.

A real ``labrun server`` serves it. Each listing asks for a page of 100 runs with the
``loss`` sparklines, as the sidebar does; the figure is the median of ``--repeats``
requests, timed from the request until its JSON has arrived. Every sort, every filter,
a page at offset 50,000 by ``offset``, and the same page by ``cursor`` (the next_cursor of
the page before it) are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.server import LabrunServer

from labrun.jupyter_ext.store.database import make_engine, schema_revisions, upgrade

PAGE = 100
POINTS = 5
KINDS = ("script", "cell", "notebook")
OPTIMIZERS = ("adam", "adamw", "sgd", "lion", "rmsprop")
BASE = datetime(2026, 1, 1)


def _stamp(t: datetime) -> str:
    # How SQLAlchemy writes a DateTime into SQLite.
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def _status(i: int) -> str:
    if i % 997 == 0:
        return "running"
    if i % 50 == 0:
        return "failed"
    if i % 101 == 0:
        return "cancelled"
    return "completed"


def build(path: Path, runs: int) -> float:
    """Make the store with bulk inserts into the migrated schema; seconds taken."""
    start = time.perf_counter()
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{tmp}")
    upgrade(engine)
    engine.dispose()
    db = sqlite3.connect(tmp)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    db.executemany(
        "INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)",
        [(p + 1, f"project-{p}", _stamp(BASE)) for p in range(5)],
    )

    def run_rows() -> Any:
        for i in range(1, runs + 1):
            created = BASE + timedelta(seconds=i)
            status = _status(i)
            took = None if status == "running" else float(1 + i % 3571)
            ended = None if took is None else created + timedelta(seconds=took)
            yield (
                i, 1 + i % 5, f"run-{i:07d}", KINDS[i % 3], status, f"user{i % 7}", 0, "{}", 1,
                "[]", "{}", 0, _stamp(created), _stamp(created), _stamp(created),
                ended and _stamp(ended), took, _stamp(ended or created),
            )  # fmt: skip

    db.executemany(
        "INSERT INTO runs (id, project_id, name, kind, status, user, requested_gpus, "
        "resources, attempt, tags, environment, priority, created_at, queued_at, started_at, "
        "ended_at, duration, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows(),
    )

    def lr(i: int) -> float:
        return (i * 7919 % 1000 + 1) / 1e5

    db.executemany(
        "INSERT INTO params (run_id, key, value, value_num) VALUES (?, ?, ?, ?)",
        ((i, "lr", json.dumps(lr(i)), lr(i)) for i in range(1, runs + 1)),
    )
    # A text value also keeps its JSON text to sort by, as the server writes it.
    db.executemany(
        "INSERT INTO params (run_id, key, value, value_num, value_text) VALUES (?, ?, ?, NULL, ?)",
        (
            (i, "optimizer", json.dumps(OPTIMIZERS[i % 5]), json.dumps(OPTIMIZERS[i % 5]))
            for i in range(1, runs + 1)
        ),
    )

    def loss(i: int, step: int) -> float:
        return (i * 104729 % 100_003) / 100_003 / (step + 1)

    db.executemany(
        "INSERT INTO metrics (run_id, key, step, value, time) VALUES (?, 'loss', ?, ?, ?)",
        ((i, s, loss(i, s), float(i + s)) for i in range(1, runs + 1) for s in range(POINTS)),
    )
    last = POINTS - 1
    db.executemany(
        "INSERT INTO metric_summaries (run_id, key, step, value, min, max, count, time) "
        "VALUES (?, 'loss', ?, ?, ?, ?, ?, ?)",
        (
            (i, last, loss(i, last), loss(i, last), loss(i, 0), POINTS, float(i + last))
            for i in range(1, runs + 1)
        ),
    )
    db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()
    tmp.rename(path)
    return time.perf_counter() - start


def store_path(folder: Path, runs: int) -> Path:
    engine = make_engine("sqlite://")
    _, head = schema_revisions(engine)
    engine.dispose()
    return folder / f"runs-{runs}-schema-{head}.db"


# name -> query of a first page; every one also asks for the loss sparklines.
SORTS = [
    "-created_at", "created_at", "id", "-id", "name", "-name", "status", "user", "kind",
    "project", "started_at", "-ended_at", "-duration", "duration", "params.lr", "-params.lr",
    "params.optimizer", "-params.optimizer", "metrics.loss", "-metrics.loss",
]  # fmt: skip
FILTERS: dict[str, dict[str, Any]] = {
    "status=failed": {"status": "failed"},
    "status=running": {"status": "running"},
    "user=user3": {"user": "user3"},
    "kind=cell": {"kind": "cell"},
    "project=project-2": {"project": "project-2"},
    "q=run-00042 (100 matches)": {"q": "run-00042"},
    "q=nothing (no match)": {"q": "no-such-run"},
    "q=0004 (1,000 matches), by -duration": {"q": "0004", "sort": "-duration"},
    "project+status+user, by metrics.loss": {
        "project": "project-1", "status": "completed", "user": "user2", "sort": "metrics.loss",
    },
    "status=failed, by params.lr": {"status": "failed", "sort": "params.lr"},
}  # fmt: skip
DEEP = 50_000
DEEP_SORTS = ("-created_at", "params.lr", "metrics.loss")


def measure(url: str, token: str, runs: int, repeats: int, *, cursor: bool) -> dict[str, Any]:
    headers = {"Authorization": f"token {token}"}
    http = httpx.Client(base_url=f"{url}labrun/api/v1", headers=headers, timeout=300)

    def timed(params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        start = time.perf_counter()
        response = http.get("/runs", params={"limit": PAGE, "spark": "loss", **params})
        body = response.json()
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, body
        return elapsed, body

    def median(params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        results = [timed(params) for _ in range(repeats)]
        return statistics.median(ms for ms, _ in results), results[-1][1]

    out: dict[str, Any] = {"runs": runs, "page": PAGE, "repeats": repeats}
    out["sort"] = {}
    for sort in SORTS:
        ms, body = median({"sort": sort})
        assert len(body["runs"]) == PAGE and body["total"] == runs and body["sparklines"]
        out["sort"][sort] = ms
        print(f"  sort {sort}: {ms:.1f} ms", flush=True)
    out["no_sparklines"] = {}
    for sort in DEEP_SORTS:
        ms, _ = median({"sort": sort, "spark": ""})
        out["no_sparklines"][sort] = ms
        print(f"  sort {sort} without sparklines: {ms:.1f} ms", flush=True)
    out["filter"] = {}
    for name, params in FILTERS.items():
        ms, body = median(params)
        out["filter"][name] = ms
        print(f"  filter {name}: {ms:.1f} ms ({body['total']} runs)", flush=True)
    out["offset"] = {}
    for sort in DEEP_SORTS:
        ms, body = median({"sort": sort, "offset": DEEP})
        assert len(body["runs"]) == PAGE
        out["offset"][sort] = ms
        print(f"  offset {DEEP:,} by {sort}: {ms:.1f} ms", flush=True)
    out["cursor"] = {}
    for sort in DEEP_SORTS if cursor else ():
        # The cursor of the page that ends at row DEEP (fetched by offset, not timed).
        _, before = timed({"sort": sort, "offset": DEEP - PAGE})
        assert before.get("next_cursor"), "this server does not page by cursor"
        ms, body = median({"sort": sort, "cursor": before["next_cursor"]})
        assert body["offset"] == DEEP and len(body["runs"]) == PAGE
        out["cursor"][sort] = ms
        print(f"  cursor at {DEEP:,} by {sort}: {ms:.1f} ms", flush=True)
    http.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--store", type=Path, default=Path("/tmp/labrun-listing-bench"))
    parser.add_argument("--no-cursor", action="store_true", help="skip the cursor walk")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    path = store_path(args.store, args.runs)
    if not path.exists():
        print(f"building {path} ...", flush=True)
        print(f"built in {build(path, args.runs):.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="labrun-listing-") as tmp:
        server = LabrunServer(Path(tmp), db_url=f"sqlite:///{path}")
        server.start()
        try:
            print(f"listing 100 of {args.runs:,} runs, median of {args.repeats}:", flush=True)
            figures = measure(
                server.url, server.token, args.runs, args.repeats, cursor=not args.no_cursor
            )
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
