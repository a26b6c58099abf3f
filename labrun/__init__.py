"""labrun: run notebook cells and notebooks on a shared GPU pool, and record every run.

The tracking API::

    import labrun

    run = labrun.init(project="segmentation", params={"lr": 0.01})
    for step in range(100):
        labrun.log({"loss": loss}, step=step)
    labrun.log_artifact("model.pt")
    labrun.finish()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from labrun.client import Client
from labrun.errors import LabrunError
from labrun.tracking import (
    Run,
    current_run,
    finish,
    flush,
    init,
    log,
    log_artifact,
    log_params,
)

__all__ = [
    "Client",
    "LabrunError",
    "Run",
    "__version__",
    "current_run",
    "finish",
    "flush",
    "init",
    "log",
    "log_artifact",
    "log_params",
]


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext labrun``: the magics (imported here, so ``import labrun`` stays small)."""
    from labrun.kernel_magics import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    from labrun.kernel_magics import unload_ipython_extension as unload

    unload(shell)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    # Imported here, not at the top: the core must not pull in the server.
    from labrun.jupyter_ext.app import LabRun

    return [{"module": "labrun.jupyter_ext.app", "app": LabRun}]
