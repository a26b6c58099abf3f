"""The labrun IPython extension: ``%load_ext labrun`` loads the magics.

``%%mlrun`` sends a cell to the pool; ``%mlparams`` and ``%mldataset`` record what a run used;
``%mlruns`` lists recent runs. See :mod:`labrun.kernel_magics.magics`.
"""

from __future__ import annotations

from typing import Any

_loaded: dict[int, Any] = {}


def load_ipython_extension(shell: Any) -> None:
    from .magics import LabrunMagics

    if id(shell) in _loaded:
        return
    magics = LabrunMagics(shell)
    shell.register_magics(magics)
    _loaded[id(shell)] = magics


def unload_ipython_extension(shell: Any) -> None:
    magics = _loaded.pop(id(shell), None)
    if magics is not None:
        magics.close()
