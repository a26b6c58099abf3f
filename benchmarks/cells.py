"""Interactive cells, side by side on one machine: raw Dask, %%mlrun, %%mlrun --session, %%px.

    pip install -e ".[dev,bench]"
    python benchmarks/cells.py --json docs/cells-results.json     # about a minute on 2 cores

Everything runs in one process against one warm pool, so the figures compare:

(a) raw Dask: ``client.submit(f, x).result()`` on the labrun pool's scheduler (the client
    the magic itself uses), a trivial function.
(b) ``%%mlrun``: a trivial one-off cell (``x = 1``) through the magic in an IPython shell,
    run and value brought back; its run is recorded (environment, source, digests) in the
    background. Measured back to back, and paced (0.2 s apart, as a person runs cells).
(c) ``%%mlrun --session``: the same cell in a session (a Dask actor, called directly).
(d) ipyparallel: ``%%px`` (blocking) on a cluster of 2 engines, the same cell.
(e) Shipping a 100 MB numpy array: raw ``client.submit(f, array)`` against a ``%%mlrun``
    cell that reads the array from the notebook, as MB/s.
(f) GPU cells (``--part gpu``, run as a process of its own with its own server: a local
    pool of two workers with one fake GPU each, ``LABRUN_FAKE_GPUS=2``): raw Dask with
    ``resources={"GPU": 1}``, ``%%mlrun --gpus 1`` (admitted by the scheduler of record
    first: one ``POST grants``; the time the magic spent on it is timed too) and
    ``%%mlrun --gpus 0`` on the same pool, back to back and paced, against one
    round trip to the server (``GET version``) and one grant asked for and released
    through the client alone (two requests; and one request that asks for a grant and
    gives back the one before, as back-to-back GPU cells do).

Each figure is the median of its samples, after warm-up rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.pool import wait_for_pool
from support.server import LabrunServer


@contextlib.contextmanager
def magics_on_a_pool(
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Any, Any, Callable[[str], None]]]:
    """A server with a local pool of two workers, and an IPython shell with the magics
    loaded against it: the shell, the magics, and a function that runs a cell."""
    from IPython.core.interactiveshell import InteractiveShell

    server = LabrunServer(Path(tempfile.mkdtemp(prefix="labrun-cells-")), pool=True, env=env)
    server.start()
    try:
        wait_for_pool(server, workers=2)
        os.environ.update(LABRUN_SERVER_URL=server.url, LABRUN_TOKEN=server.token)
        shell = InteractiveShell.instance()
        shell.run_cell("%load_ext labrun")
        magics = shell.magics_manager.registry["LabrunMagics"]

        def cell(source: str) -> None:
            outcome = shell.run_cell(source)
            if not outcome.success:
                raise RuntimeError(f"the cell failed: {outcome.error_in_exec}")

        yield shell, magics, cell
        magics.close()
    finally:
        server.stop()


def median_ms(step: Callable[[], Any], rounds: int, warmup: int = 5, pause: float = 0.0) -> float:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
        if pause:
            time.sleep(pause)
    return statistics.median(samples) * 1000


def trivial(x: int) -> int:
    return x + 1


def nbytes(array: Any) -> int:
    return int(array.nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--part", choices=["all", "gpu"], default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "gpu":
        print(json.dumps(gpu_cells(args.rounds)))
        return

    import numpy as np

    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with magics_on_a_pool() as (shell, magics, cell):
        cell("%%mlrun --gpus 0\nx = 1")
        dask = magics.pool.dask
        n = args.rounds
        results["raw_dask_ms"] = median_ms(lambda: dask.submit(trivial, 1, pure=False).result(), n)
        results["mlrun_ms"] = median_ms(lambda: cell("%%mlrun --gpus 0\nx = 1"), n)
        results["raw_dask_paced_ms"] = median_ms(
            lambda: dask.submit(trivial, 1, pure=False).result(), n // 2, pause=0.2
        )
        results["mlrun_paced_ms"] = median_ms(
            lambda: cell("%%mlrun --gpus 0\nx = 1"), n // 2, pause=0.2
        )
        cell("%%mlrun --gpus 0 --session bench\nx = 1")
        results["session_ms"] = median_ms(
            lambda: cell("%%mlrun --gpus 0 --session bench\nx = 1"), n
        )
        cell("%mlrun_release bench")

        array = np.random.default_rng(0).random(100 * 2**20 // 8)
        shell.user_ns["array"] = array
        mb = array.nbytes / 2**20
        raw_ms = median_ms(lambda: dask.submit(nbytes, array, pure=False).result(), 7, warmup=2)
        ship_ms = median_ms(lambda: cell("%%mlrun --gpus 0\nsize = array.nbytes"), 7, warmup=2)
        results["ship_100mb_raw_mb_s"] = mb / (raw_ms / 1000)
        results["ship_100mb_mlrun_mb_s"] = mb / (ship_ms / 1000)
        del shell.user_ns["array"]

    try:
        import ipyparallel as ipp
    except ImportError:
        print("ipyparallel is not installed (pip install -e '.[bench]'); %%px skipped")
    else:
        with ipp.Cluster(n=2, log_level=40) as rc:
            view = rc[:]
            view.block = True
            view.activate()
            shell.run_cell("%%px\nx = 1")
            results["px_ms"] = median_ms(lambda: cell("%%px\nx = 1"), args.rounds)

    gpu = subprocess.run(
        [sys.executable, __file__, "--part", "gpu", "--rounds", str(args.rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    results.update(json.loads(gpu.stdout.strip().splitlines()[-1]))

    results["mlrun_vs_raw"] = results["mlrun_ms"] / results["raw_dask_ms"]
    results["mlrun_paced_vs_raw_paced"] = results["mlrun_paced_ms"] / results["raw_dask_paced_ms"]
    if "px_ms" in results:
        results["session_vs_px"] = results["session_ms"] / results["px_ms"]
    results["ship_rate_vs_raw"] = results["ship_100mb_mlrun_mb_s"] / results["ship_100mb_raw_mb_s"]
    results["gpu_cell_extra_ms"] = results["gpu_mlrun_ms"] - results["gpu_cpu_mlrun_ms"]
    results["gpu_cell_extra_paced_ms"] = (
        results["gpu_mlrun_paced_ms"] - results["gpu_cpu_mlrun_paced_ms"]
    )
    results["gpu_cell_extra_vs_server_round_trip"] = (
        results["gpu_cell_extra_ms"] / results["gpu_server_round_trip_ms"]
    )
    for key, value in results.items():
        print(f"{key:28s} {value:10.2f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def gpu_cells(rounds: int) -> dict[str, float]:
    """Part (f): GPU cells against CPU cells and raw Dask on a pool with (fake) GPUs."""
    from labrun.client import Client
    from labrun.models import RequestGrant

    results: dict[str, float] = {}
    with magics_on_a_pool({"LABRUN_FAKE_GPUS": "2"}) as (_, magics, cell):
        cell("%%mlrun --gpus 1\nx = 1")
        dask = magics.pool.dask
        results["gpu_raw_dask_ms"] = median_ms(
            lambda: dask.submit(trivial, 1, resources={"GPU": 1}, pure=False).result(), rounds
        )
        # How long each GPU cell spent asking for its grant, inside the magic.
        asking: list[float] = []
        acquire = magics.pool.grants.acquire

        def timed_acquire(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            acquire(*args, **kwargs)
            asking.append(time.perf_counter() - start)

        magics.pool.grants.acquire = timed_acquire
        # Paced first: their records go out between them, and none are left to the others.
        paced = rounds // 2
        results["gpu_mlrun_paced_ms"] = median_ms(
            lambda: cell("%%mlrun --gpus 1\nx = 1"), paced, pause=0.2
        )
        results["gpu_grant_in_cell_paced_ms"] = statistics.median(asking[-paced:]) * 1000
        results["gpu_cpu_mlrun_paced_ms"] = median_ms(
            lambda: cell("%%mlrun --gpus 0\nx = 1"), paced, pause=0.2
        )
        results["gpu_mlrun_ms"] = median_ms(lambda: cell("%%mlrun --gpus 1\nx = 1"), rounds)
        results["gpu_grant_in_cell_ms"] = statistics.median(asking[-rounds:]) * 1000
        results["gpu_cpu_mlrun_ms"] = median_ms(lambda: cell("%%mlrun --gpus 0\nx = 1"), rounds)
        with Client() as client:  # the server the magics found (LABRUN_SERVER_URL)
            results["gpu_server_round_trip_ms"] = median_ms(client.version, rounds)
            keys = (f"bench-grant-{i:06d}" for i in range(10**6))

            def grant() -> None:
                key = next(keys)
                client.request_grant(RequestGrant(key=key, gpus=1))
                client.release_grants([key])

            results["gpu_grant_and_release_ms"] = median_ms(grant, rounds)
            ended: list[str] = []

            def carrying() -> None:  # as back-to-back GPU cells: one request for both
                key = next(keys)
                client.request_grant(RequestGrant(key=key, gpus=1, release=ended[-1:]))
                ended.append(key)

            results["gpu_grant_carrying_release_ms"] = median_ms(carrying, rounds)
            client.release_grants(ended[-1:])
        results["gpu_mlrun_vs_raw"] = results["gpu_mlrun_ms"] / results["gpu_raw_dask_ms"]
    return results


if __name__ == "__main__":
    main()
