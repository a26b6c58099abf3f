"""The test notebooks the pool's jobs run (the pool_server fixture is tests/conftest.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.notebooks import write_notebook


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
