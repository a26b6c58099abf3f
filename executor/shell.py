"""The worker's IPython shell: what a ``%%mlrun`` cell runs in, one per worker process.

Magics, ``display()``, rich outputs and matplotlib figures work as they do in a notebook. What
the shell shows (displays, a cell's result, a traceback) goes to the cell that runs now, the
:class:`Output` that :mod:`.execution` sets with :func:`capture_into`; this module knows
nothing else of executions, so the dependency goes one way.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from typing import Any, Protocol

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

logger = logging.getLogger("labrun.executor")


class Output(Protocol):
    """Where the running cell's displays, result and error go."""

    def emit(self, kind: str, **body: Any) -> None: ...

    def raised(self, etype: Any, evalue: Any, stb: list[str]) -> None: ...


_output: Output | None = None


def current_output() -> Output | None:
    """The output of the cell running in this process, if one runs."""
    return _output


@contextlib.contextmanager
def capture_into(output: Output) -> Iterator[None]:
    """While the cell runs: what the shell shows goes to ``output``."""
    global _output
    _output = output
    try:
        yield
    finally:
        _output = None


class _Publisher(DisplayPublisher):
    """``display()`` inside a cell: the data goes to the kernel as an event."""

    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        output = current_output()
        if output is not None:
            output.emit(
                "display",
                data=_jsonable(data),
                metadata=_jsonable(metadata or {}),
                transient=transient or {},
                update=update,
            )

    def clear_output(self, wait: bool = False) -> None:
        output = current_output()
        if output is not None:
            output.emit("clear", wait=wait)


class _ResultHook(DisplayHook):
    """The value of a cell's last expression, sent like Jupyter's ``execute_result``."""

    def start_displayhook(self) -> None:
        pass

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        output = current_output()
        if output is not None:
            output.emit("result", data=_jsonable(format_dict), metadata=_jsonable(md_dict or {}))

    def finish_displayhook(self) -> None:
        pass


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    # Dask events travel as msgpack: keep text and JSON-like values, drop the rest.
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool | dict | list)}


class WorkerShell(InteractiveShell):
    """An IPython shell without a terminal: tracebacks and outputs go to the running cell."""

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        output = current_output()
        if output is None:
            return super()._showtraceback(etype, evalue, stb)
        output.raised(etype, evalue, list(stb))
        return None


_shell: WorkerShell | None = None
_shell_lock = threading.Lock()
# One cell at a time per process: sys.stdout, the display hook and the shell's namespace are
# process-wide. The default pool has one worker process per GPU, so cells do not queue here.
exec_lock = threading.Lock()


def shell() -> WorkerShell:
    """This process's shell, made on first use."""
    global _shell
    with _shell_lock:
        if _shell is None:
            home = tempfile.mkdtemp(prefix="labrun-ipython-")
            config = Config()
            config.HistoryManager.enabled = False
            config.InteractiveShell.colors = "Linux"
            # The singleton: display() and get_ipython() look for it.
            created = WorkerShell.instance(
                config=config,
                ipython_dir=home,
                display_pub_class=_Publisher,
                displayhook_class=_ResultHook,
            )
            # Every representation (HTML, images, ...) goes to the notebook, as ipykernel does;
            # a plain shell would keep only text.
            formatter = created.display_formatter
            assert formatter is not None
            formatter.active_types = formatter.format_types
            # Figures go to the kernel as images, the way a notebook shows them.
            os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            _text_progress_bars()
            try:
                created.extension_manager.load_extension("labrun")  # type: ignore[union-attr]
            except Exception:
                # The cell still runs; only our magics are missing in it.
                logger.exception("labrun: could not load the labrun magics into the worker shell")
            _shell = created
        return _shell


def _text_progress_bars() -> None:
    """``tqdm.notebook`` as the text bar on the worker.

    Its widget's model would live here, where no notebook's front end can reach it, so
    nothing would update; the text bar's output streams to the notebook and redraws in
    place, as ``tqdm`` and ``tqdm.auto`` already do here.
    """
    if importlib.util.find_spec("tqdm") is None:
        return
    import tqdm
    from tqdm import std

    text = types.ModuleType("tqdm.notebook", "tqdm.notebook, as text: cells run on a worker")
    text.__dict__.update(
        tqdm=std.tqdm, trange=std.trange, tqdm_notebook=std.tqdm, tnrange=std.trange
    )
    sys.modules["tqdm.notebook"] = text
    tqdm.notebook = text


class Namespace:
    """The globals a cell runs in: a module of its own, seen by the shell as ``__main__``."""

    def __init__(self) -> None:
        self.module = types.ModuleType("__main__")
        self.ns = self.module.__dict__
        self.ns["__builtins__"] = __builtins__
        self.primed = False

    @contextlib.contextmanager
    def active(self, sh: WorkerShell) -> Iterator[None]:
        saved = sh.user_module, sh.user_ns
        sh.user_module, sh.user_ns = self.module, self.ns
        if not self.primed:
            sh.init_user_ns()
            self.primed = True
        try:
            yield
        finally:
            sh.user_module, sh.user_ns = saved


def flush_figures(sh: WorkerShell) -> None:
    """Show the figures a cell left open, as a notebook's inline backend does, then close them."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib import pyplot

    if not getattr(sh, "_labrun_figures", False):
        select_figure_formats(sh, {"png"})
        sh._labrun_figures = True  # type: ignore[attr-defined]
    from IPython.display import display

    for number in pyplot.get_fignums():
        display(pyplot.figure(number))
    pyplot.close("all")
