"""Big requests against a real ``labrun server``: do they stall everyone else?

    python benchmarks/big_requests.py --json docs/big-requests-results.json

(a) One large metrics POST (52 MB of rows, 850,000 points) while another client polls
    ``GET version`` every 10 ms: the slowest of those answers, and the server's peak memory.
    Then the same with a body just under the default body limit (16 MB, 260,000 points).
(b) A plain ``GET runs/{id}/metrics`` of a run with 692,000 points: its size in bytes.
(c) ``GET runs?spark=loss`` (the Runs panel's page, 50 runs) with 692,000 points stored:
    the median of 30, against the same page without ``spark``.

The script only uses the REST API, so it measures any labrun version's server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.server import LabrunServer

STORED = 692_000  # points on the store for (b) and (c): 4 keys x 173,000 steps
KEYS = ("loss", "acc", "lr", "grad")


class Poller(threading.Thread):
    """GET version every 10 ms, keeping the slowest answer and the server's peak memory."""

    def __init__(self, http: httpx.Client, pid: int) -> None:
        super().__init__(daemon=True)
        self.http, self.process = http, psutil.Process(pid)
        self.slowest = 0.0
        self.peak_rss = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            start = time.perf_counter()
            self.http.get("version").raise_for_status()
            self.slowest = max(self.slowest, time.perf_counter() - start)
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            time.sleep(0.01)


def rows_body(run_id: int, points: int) -> bytes:
    now = time.time()
    rows = [["loss", 1.0 / (i + 1), i, now] for i in range(points)]
    return json.dumps({"rows": rows}).encode()


def big_post(http: httpx.Client, pid: int, run_id: int, body: bytes) -> dict[str, Any]:
    poller = Poller(http, pid)
    poller.start()
    time.sleep(0.5)  # a baseline of quick answers first
    start = time.perf_counter()
    response = http.post(
        f"runs/{run_id}/metrics", content=body, headers={"Content-Type": "application/json"}
    )
    elapsed = time.perf_counter() - start
    time.sleep(0.5)
    poller.done.set()
    poller.join()
    return {
        "body_mb": round(len(body) / 1e6, 1),
        "status": response.status_code,
        "post_seconds": round(elapsed, 2),
        "slowest_other_request_seconds": round(poller.slowest, 3),
        "server_peak_rss_gb": round(poller.peak_rss / 1e9, 2),
    }


def seed(http: httpx.Client, runs: int) -> list[int]:
    """``runs`` runs; the first has STORED points, in batches as labrun's sender sends them."""
    ids = [http.post("runs", json={"name": f"r{i}"}).json()["id"] for i in range(runs)]
    steps = STORED // len(KEYS)
    now = time.time()
    for start in range(0, steps, 2_500):
        rows = [
            [key, 1.0 / (i + 1), i, now]
            for i in range(start, min(steps, start + 2_500))
            for key in KEYS
        ]
        http.post(f"runs/{ids[0]}/metrics", json={"rows": rows}).raise_for_status()
    for run_id in ids[1:]:
        rows = [[key, 1.0 / (i + 1), i, now] for i in range(100) for key in KEYS]
        http.post(f"runs/{run_id}/metrics", json={"rows": rows}).raise_for_status()
    return ids


def median_ms(http: httpx.Client, path: str, params: dict[str, Any]) -> float:
    times = []
    for _ in range(30):
        start = time.perf_counter()
        http.get(path, params=params).raise_for_status()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="labrun-big-") as tmp:
        server = LabrunServer(Path(tmp) / "server")
        server.start()
        assert server.process is not None
        http = httpx.Client(
            base_url=f"{server.url}labrun/api/v1/",
            headers={"Authorization": f"token {server.token}"},
            timeout=600,
        )
        try:
            target = http.post("runs", json={"name": "big"}).json()["id"]
            results["post_52mb"] = big_post(
                http, server.process.pid, target, rows_body(target, 850_000)
            )
            results["post_16mb"] = big_post(
                http, server.process.pid, target, rows_body(target, 260_000)
            )
            ids = seed(http, 50)
            plain = http.get(f"runs/{ids[0]}/metrics")
            results["get_metrics_plain"] = {
                "bytes": len(plain.content),
                "points": sum(len(s["steps"]) for s in plain.json()["series"]),
            }
            results["runs_page_ms"] = {
                "with_spark": median_ms(http, "runs", {"spark": "loss"}),
                "without_spark": median_ms(http, "runs", {}),
            }
        finally:
            http.close()
            server.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
