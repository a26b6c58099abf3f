"""How a local pool starts: what a worker imports to join, and which workers come first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.pool import wait_for_pool
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client


def test_a_worker_joins_without_importing_nbconvert_or_papermill() -> None:
    # The plugin is unpickled on the worker's event loop; nbformat's jsonschema alone takes
    # seconds to import on a busy machine. Its warm-up thread imports them afterwards.
    code = (
        "import sys, labrun.executor.worker\n"
        "heavy = [m for m in ('nbformat', 'nbconvert', 'papermill', 'jsonschema', 'IPython')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_local_pool_is_ready_with_one_worker_and_the_others_join(tmp_path: Path) -> None:
    server = LabrunServer(tmp_path, pool=True, options=["--LabRun.local_workers=3"])
    server.start()
    try:
        wait_for_pool(server, workers=1)
        with Client(server.url, server.token) as client:
            # The later workers start after the pool is ready, and get the labrun plugin
            # too: each reports its heartbeat through it.
            wait_for(lambda: len(client.pool().workers) == 3, 180, "three workers")
            wait_for(
                lambda: len([w for w in client.workers().workers if w.alive]) == 3,
                180,
                "three workers' heartbeats",
            )
            assert all(w.alive for w in client.pool().workers)
    finally:
        server.stop()


def test_the_worker_plugins_are_small_named_and_idempotent() -> None:
    from labrun.executor.worker import worker_plugins

    plugins = worker_plugins("http://127.0.0.1:1/", {"token": "t", "issued": 0, "expires": 1})
    names = [plugin.name for plugin in plugins]  # type: ignore[attr-defined]
    # Registering them again (a server restarting on the same scheduler) replaces nothing.
    assert all(plugin.idempotent for plugin in plugins)
    assert len(set(names)) == len(names) and "labrun" in names
