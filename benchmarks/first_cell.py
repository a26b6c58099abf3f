"""The first ``%%mlrun`` cell after ``jupyter lab`` starts, against Dask's LocalCluster alone.

    python benchmarks/first_cell.py                     # about two minutes on 2 cores
    python benchmarks/first_cell.py --json docs/first-cell-results.json

Each round starts a fresh ``jupyter lab`` with labrun (an empty store, the local pool of 2
CPU workers) and measures, from the moment its process is started:

- until the server answers (``GET /labrun/api/v1/version`` is a 200);
- until the first cell's result: a "kernel" (an IPython shell with ``%load_ext labrun``,
  started and imported before the server, as a kernel a user opened would be) runs
  ``%%mlrun`` on ``x = 1`` the moment the server answers, and has ``x`` back.

The peer, in the same rounds: a fresh Python process that starts ``LocalCluster(n_workers=2,
processes=True)`` and gets ``client.submit(f, 1).result()``, timed from its start and also
from just before the ``LocalCluster`` call. Rounds alternate the two, so a busy moment of
the shared machine falls on both; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.lab import JupyterLab

# The "kernel": imports first, says so, then waits for the server and runs the cell.
KERNEL = """
import json, sys, time
import httpx
from IPython.core.interactiveshell import InteractiveShell

url, token = sys.argv[1], sys.argv[2]
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "labrun")
print("ready", flush=True)
while True:
    try:
        if httpx.get(url + "labrun/api/v1/version", headers={"Authorization": "token " + token},
                     timeout=1).is_success:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.01)
answered = time.time()
result = shell.run_cell("%%mlrun\\nx = 1\\n")
result.raise_error()
assert shell.user_ns["x"] == 1
print(json.dumps({"answered": answered, "result": time.time()}), flush=True)
"""

# The peer: Dask's LocalCluster alone, in a fresh process.
LOCAL_CLUSTER = """
import json, tempfile, time
started = time.time()
from distributed import Client, LocalCluster
imported = time.time()
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                  local_directory=tempfile.mkdtemp()) as cluster, Client(cluster) as client:
    up = time.time()
    assert client.submit(abs, -1).result() == 1
    print(json.dumps({"started": started, "imported": imported, "up": up,
                      "result": time.time()}), flush=True)
"""


def first_cell(workdir: Path) -> dict[str, float]:
    lab = JupyterLab(workdir, pool=True)
    command, env = lab.command()
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL, lab.url, lab.token],
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "LABRUN_SERVER_URL": lab.url, "LABRUN_TOKEN": lab.token},
        cwd=workdir,
    )
    assert kernel.stdout is not None
    assert kernel.stdout.readline().strip() == "ready"
    start = time.time()
    lab.process = subprocess.Popen(
        command,
        stdout=lab.log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
        env=env,
    )
    try:
        out, _ = kernel.communicate(timeout=300)
        if kernel.returncode != 0:
            raise RuntimeError(f"the kernel failed; see {lab.log_path}")
        times = json.loads(out.strip().splitlines()[-1])
    finally:
        kernel.kill()
        lab.stop()
    return {
        "answered": times["answered"] - start,
        "result": times["result"] - start,
        "after_answer": times["result"] - times["answered"],
    }


def local_cluster() -> dict[str, float]:
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_CLUSTER], capture_output=True, text=True, check=True
    )
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "result": times["result"] - start,
        "cluster_and_task": times["result"] - times["imported"],
        "cluster": times["up"] - times["imported"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Write the figures here.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="labrun-bench-first-cell-"))
    rounds: dict[str, list[dict[str, float]]] = {"labrun": [], "local_cluster": []}
    for i in range(args.rounds):
        rounds["local_cluster"].append(local_cluster())
        rounds["labrun"].append(first_cell(workdir / f"lab-{i}"))
        print(f"round {i}: labrun {rounds['labrun'][-1]}, dask {rounds['local_cluster'][-1]}")
    medians: dict[str, Any] = {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in rounds.items()
    }
    lab, dask = medians["labrun"], medians["local_cluster"]
    print(f"jupyter lab answers:            {lab['answered']:.2f} s after its start")
    print(f"first %%mlrun result:           {lab['result']:.2f} s after its start")
    print(f"  after the server answered:    {lab['after_answer']:.2f} s (goal: at most 3 s)")
    print(f"LocalCluster, process to result: {dask['result']:.2f} s")
    print(f"  LocalCluster() and the task:  {dask['cluster_and_task']:.2f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"rounds": rounds, "medians": medians, "cpus": os.cpu_count()}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
