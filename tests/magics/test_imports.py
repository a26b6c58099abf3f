"""The kernel side imports no executor module: only the task functions, lazily, once it sends.

A notebook's kernel loads the magics on every start; the worker's code (its IPython shell,
papermill, the plugins) has no business there, and would tie the kernel to the worker's
internals.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LOADED = (
    "import sys\n"
    "{setup}\n"
    "found = sorted(m for m in sys.modules if m.startswith('labrun.executor'))\n"
    "assert not found, found\n"
)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param("import labrun.kernel_magics", id="importing the magics"),
        pytest.param(
            "from IPython.core.interactiveshell import InteractiveShell\n"
            "shell = InteractiveShell.instance()\n"
            "shell.run_line_magic('load_ext', 'labrun')\n"
            "assert 'mlrun' in shell.magics_manager.magics['cell']",
            id="loading the extension into a shell",
        ),
    ],
)
def test_the_kernel_imports_no_executor_module(setup: str) -> None:
    code = LOADED.format(setup=setup)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
