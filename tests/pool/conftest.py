"""Real labrun servers with real local Dask pools, and helpers to drive them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.server import LabrunServer


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    """One server with a local pool of two CPU workers, shared by a module's tests."""
    server = LabrunServer(tmp_path_factory.mktemp("pool-server"), pool=True)
    server.start()
    wait_for_pool(server)
    yield server
    server.stop()


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    """A folder of the test notebooks."""
    write_notebook(
        tmp_path / "params.ipynb",
        "import labrun\nprint('hello', x, lr)\nfor i in range(5):\n    labrun.log({'loss': lr / (i + 1)})",
        "result = x * 2\nresult",
        parameters="x = 1\nlr = 0.1\nname = 'a'",
    )
    write_notebook(
        tmp_path / "fails.ipynb",
        "a = 1",
        "raise ValueError('bad value ' + str(a))",
        "never = True",
    )
    write_notebook(
        tmp_path / "slow.ipynb",
        "import time\nprint('started', flush=True)\ntime.sleep(seconds)\nprint('finished')",
        parameters="seconds = 60",
    )
    return tmp_path
