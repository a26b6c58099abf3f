"""``labrun submit NB --wait`` against ``papermill NB out.ipynb``, both as a user types them.

    python benchmarks/cli_wait.py                  # about two minutes on 2 cores
    python benchmarks/cli_wait.py --json docs/cli-wait-results.json

Each figure is a whole process, from its start until it exited: the ``labrun`` and
``papermill`` console scripts of this environment, run with ``subprocess``. The notebook is
the trivial one of ``benchmarks/jobs.py`` (a parameters cell, a print, an expression).

labrun runs against a warm pool: one ``labrun server`` with its local pool of 2 workers,
started once, before anything is measured (a user's server is already running). The CLI
finds it by ``LABRUN_SERVER_URL`` and ``LABRUN_TOKEN``. The two commands alternate, a pause
between rounds letting the pool replace the warm kernel the last job used, so a busy moment
of the shared machine falls on both. Also measured, to show where labrun's time goes: the
same process doing nothing but start (``labrun --version``), and ``python -c pass``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.server import LabrunServer

BIN = Path(sys.executable).parent


def script(name: str) -> list[str]:
    """The console script ``name`` as a user's shell finds it in this environment (a
    worktree's environment may share its packages without the script: then its module)."""
    path = BIN / name
    return [str(path)] if path.exists() else [sys.executable, "-m", name]


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, help="Write the figures here.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="labrun-bench-cli-"))
    notebook = write_notebook(
        workdir / "trivial.ipynb", "print('x is', x)", "x * 2", parameters="x = 1"
    )
    server = LabrunServer(workdir / "labrun", pool=True, options=["--LabRun.local_workers=2"])
    server.start()
    try:
        wait_for_pool(server, workers=2)
        env = {**server.env, "COLUMNS": "120"}

        def labrun(x: int) -> float:
            command = [*script("labrun"), "submit", str(notebook), "-p", "x", str(x), "--wait"]
            return timed(command, env, workdir)

        def papermill(x: int) -> float:
            command = [*script("papermill"), str(notebook), "out.ipynb", "-p", "x", str(x)]
            return timed(command, env, workdir)

        for x in range(3):  # warm: each worker's first job loads nbconvert and friends
            labrun(x)
            papermill(x)
        figures: dict[str, list[float]] = {
            "labrun_submit_wait": [],
            "papermill": [],
            "labrun_version": [],
            "python_pass": [],
        }
        for x in range(args.rounds):
            time.sleep(1.5)
            figures["labrun_submit_wait"].append(labrun(x))
            figures["papermill"].append(papermill(x))
            figures["labrun_version"].append(timed([*script("labrun"), "--version"], env))
            figures["python_pass"].append(timed([sys.executable, "-c", "pass"]))
    finally:
        server.stop()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    ratio = medians["labrun_submit_wait"] / medians["papermill"]
    for name, value in medians.items():
        print(
            f"{name:20} median {value:.3f} s   all: {', '.join(f'{v:.2f}' for v in figures[name])}"
        )
    print(f"labrun submit --wait / papermill: {ratio:.2f}x (goal: at most 0.25x)")
    if args.json:
        args.json.write_text(
            json.dumps({"runs": figures, "medians": medians, "ratio": ratio}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
