"""Small notebooks for job tests, written with nbformat."""

from __future__ import annotations

from pathlib import Path

import nbformat


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    """A notebook with an optional ``parameters``-tagged cell, then ``cells``."""
    nbformat.write(make_notebook(*cells, parameters=parameters), path)
    return path


def make_notebook(*cells: str, parameters: str | None = None) -> nbformat.NotebookNode:
    """The notebook :func:`write_notebook` writes, in memory (a job's ``content``)."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb
