"""The Runs panel with 10,000 runs (or a million), measured in Chromium.

    python benchmarks/sidebar.py                      # about a minute on 2 cores
    python benchmarks/sidebar.py --json docs/sidebar-results.json
    python benchmarks/sidebar.py --store /tmp/labrun-listing-bench/runs-1000000-schema-0008.db

``--store`` serves a store made by ``benchmarks/listing.py`` instead (1,000,000 runs named
``run-0000001`` and on, each with a 5-point ``loss`` curve) from a copy of it; its filter
texts (``run-0001`` and on) each match 1,000 runs there too.

A real ``jupyter lab`` with labrun serves a store of 10,000 runs (each with a parameter and
a 10-point loss curve, so every row has a sparkline). In Debian's Chromium:

- *first render*: from the click on the sidebar's labrun tab to the first rows on screen
  (page reloaded before each trial, so each is a first opening);
- *filter update*: from typing a name filter that matches 1,000 runs to the list showing
  them (count and rows), then clearing it again.

Times are taken in the page (``performance.now()``), from the DOM event to the mutation
that shows the result; the median of each is reported against the 300 ms goal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.lab import SIDEBAR_TAB, JupyterLab, chromium

from labrun.jupyter_ext.store import Database, Store, check_schema
from labrun.models import CreateRun, LogMetrics, RunStatus, UpdateRun

RUNS = 10_000

# Resolves with the milliseconds from a click on the labrun tab to the first row on screen.
FIRST_RENDER_JS = """(tab) => new Promise(resolve => {
  const t0 = performance.now();
  const done = () => document.querySelector('.jp-labrun-body .jp-labrun-row[data-run-id]');
  const observer = new MutationObserver(() => {
    if (done()) { observer.disconnect(); resolve(performance.now() - t0); }
  });
  observer.observe(document.body, {childList: true, subtree: true});
  // Lumino's tab bar selects on pointerdown at the tab's position.
  const el = document.querySelector(tab);
  const r = el.getBoundingClientRect();
  const at = {bubbles: true, button: 0, clientX: r.x + r.width / 2, clientY: r.y + r.height / 2};
  el.dispatchEvent(new PointerEvent('pointerdown', at));
  el.dispatchEvent(new PointerEvent('pointerup', at));
})"""

# Types `text` into the filter as React sees typing, and resolves with the milliseconds
# until the count reads `expected` and a row matching it is on screen.
FILTER_JS = """([text, expected]) => new Promise(resolve => {
  const input = document.querySelector('.jp-labrun-search');
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  const done = () => {
    const count = document.querySelector('.jp-labrun-count');
    const row = document.querySelector('.jp-labrun-body .jp-labrun-row[data-run-id] .jp-labrun-col-name');
    return count && count.textContent === expected && row && row.textContent.includes(text);
  };
  const t0 = performance.now();
  const observer = new MutationObserver(() => {
    if (done()) { observer.disconnect(); resolve(performance.now() - t0); }
  });
  observer.observe(document.querySelector('.jp-labrun-runs'),
                   {childList: true, subtree: true, characterData: true});
  setter.call(input, text);
  input.dispatchEvent(new Event('input', {bubbles: true}));
})"""


def seed(db_url: str) -> float:
    """10,000 finished runs, each with a parameter and a 10-point curve; seconds taken."""
    start = time.perf_counter()
    db = Database(db_url)
    check_schema(db.engine, auto_upgrade=True)
    store = Store(db, artifact_root=tempfile.mkdtemp())
    for i in range(RUNS):
        run = store.runs.create(
            CreateRun(name=f"run-{i:05d}", project="bench", params={"lr": 0.001 * (i % 10)}),
            "alice",
        )
        rows = [("loss", 1.0 / (step + 1 + i % 7), step, None) for step in range(10)]
        store.metrics.ingest(run.id, LogMetrics(rows=rows))
        store.runs.update(run.id, UpdateRun(status=RunStatus.completed))
    db.close()
    return time.perf_counter() - start


def measure(trials: int, store: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="labrun-sidebar-bench-") as tmp:
        lab = JupyterLab(Path(tmp) / "lab", pool=False)
        lab.data_dir.mkdir(parents=True, exist_ok=True)
        path = lab.data_dir / "labrun.db"
        if store is None:
            runs, prefix = RUNS, "run-0"
            seconds = seed(f"sqlite:///{path}")
            print(f"seeded {RUNS} runs in {seconds:.1f} s", flush=True)
        else:
            # A copy: the server writes (its signing secret, the start-up check).
            shutil.copyfile(store, path)
            with sqlite3.connect(path) as db:
                runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            prefix = "run-000"
            print(f"serving a copy of {store} ({runs} runs)", flush=True)
        lab.start()
        try:
            with chromium() as context:
                page = context.new_page()
                first: list[float] = []
                for _ in range(trials + 1):
                    # ?reset: a fresh workspace, so the sidebar starts closed each time.
                    page.goto(f"{lab.url}lab?reset&token={lab.token}")
                    page.wait_for_selector(SIDEBAR_TAB, timeout=90_000)
                    page.wait_for_timeout(500)  # let JupyterLab settle
                    first.append(page.evaluate(FIRST_RENDER_JS, SIDEBAR_TAB))
                page.wait_for_selector(f".jp-labrun-count:has-text('{runs} runs')")
                filtered: list[float] = []
                for i in range(trials + 1):
                    # A different filter each time so no answer is cached anywhere.
                    text = f"{prefix}{i % 9 + 1}"
                    filtered.append(page.evaluate(FILTER_JS, [text, "1000 runs"]))
                    page.evaluate(FILTER_JS, ["run-", f"{runs} runs"])
        finally:
            lab.stop()
    # The first trial of each warms caches (JIT, SQLite pages): reported, not counted.
    return {
        "runs": runs,
        "first_render_ms": {"median": statistics.median(first[1:]), "all": first},
        "filter_update_ms": {"median": statistics.median(filtered[1:]), "all": filtered},
        "goal_ms": 300,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--store", type=Path, help="serve this SQLite store (a copy of it)")
    args = parser.parse_args()
    results = measure(args.trials, args.store)
    for key in ("first_render_ms", "filter_update_ms"):
        figures = results[key]
        print(
            f"{key}: median {figures['median']:.0f} ms (goal < 300 ms); "
            f"trials {', '.join(f'{t:.0f}' for t in figures['all'])}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
