"""What a command that runs a notebook reads: the notebook, its parameters, the shared options."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from labrun import environment
from labrun.errors import InvalidRequest
from labrun.models import CodeState
from labrun.params import load_notebook, parse_value


def read_notebook(path: str) -> tuple[str, dict[str, Any]]:
    """The notebook at ``path`` (its absolute path and JSON), or a clear error."""
    file = Path(path).expanduser()
    if not file.exists():
        raise InvalidRequest(f"no notebook at {path!r}")
    if file.is_dir():
        raise InvalidRequest(f"{path!r} is a folder; name an .ipynb file")
    return str(file.resolve()), load_notebook(file.read_bytes(), where=repr(path))


def code_state(path: str, content: dict[str, Any]) -> CodeState:
    """The notebook's git state and local modules, read here, where the notebook is."""
    return CodeState.model_validate(environment.code_state(Path(path), content))


def read_parameters(pairs: tuple[tuple[str, str], ...], files: tuple[str, ...]) -> dict[str, Any]:
    """``-f`` files first, then ``-p`` pairs (which win), as papermill merges them."""
    import yaml

    values: dict[str, Any] = {}
    for name in files:
        try:
            loaded = yaml.safe_load(Path(name).read_text())
        except OSError as err:
            raise InvalidRequest(f"cannot read parameters file {name!r}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise InvalidRequest(f"parameters file {name!r} is not valid YAML: {err}") from err
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"parameters file {name!r} must hold a mapping of name: value")
        values.update(loaded)
    for key, text in pairs:
        values[key] = parse_value(text)
    return values


def parse_grid_values(name: str, text: str) -> list[Any]:
    """``0.1,0.01`` or a JSON list ``[1, [2, 3]]``."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError as err:
            raise InvalidRequest(f"--grid {name}: {text!r} is not a JSON list ({err})") from err
        if not isinstance(values, list):
            raise InvalidRequest(f"--grid {name}: give a JSON list or comma-separated values")
        return values
    return [parse_value(part.strip()) for part in text.split(",") if part.strip()]


def parameter_options(f: Any) -> Any:
    """papermill's -p NAME VALUE and -f params.yaml, for every command that runs a notebook."""
    f = click.option(
        "-f",
        "--parameters-file",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A YAML file of parameters (repeatable; -p wins).",
    )(f)
    return click.option(
        "-p",
        "--parameters",
        "pairs",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help="A parameter of the notebook's 'parameters' cell (repeatable).",
    )(f)


def job_options(f: Any) -> Any:
    """The options every job command shares."""
    options = [
        click.option(
            "--gpus", default=0, show_default=True, type=click.IntRange(0, 64), help="GPUs."
        ),
        click.option("--queue", "-q", default="default", show_default=True, help="Queue."),
        click.option(
            "--priority",
            default=0,
            show_default=True,
            type=click.IntRange(-(2**31), 2**31 - 1),
            help="Among your own queued jobs in the queue, a higher one starts first.",
        ),
        click.option("--project", default="default", show_default=True, help="Project."),
        click.option("--name", help="Run name (default: the notebook's name)."),
        click.option("--tag", "tags", multiple=True, help="A label (repeatable)."),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per cell."
        ),
        click.option(
            "--wait", is_flag=True, help="Follow until done; exit 0 only if all completed."
        ),
        click.option(
            "-o",
            "--output-dir",
            type=click.Path(file_okay=False),
            help="With --wait: save the executed notebooks here.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return parameter_options(f)


def job_fields(
    notebook: str,
    pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    gpus: int,
    queue: str,
    project: str,
    name: str | None,
    tags: tuple[str, ...],
    timeout: float | None,
) -> dict[str, Any]:
    """What ``submit`` and ``sweep`` send alike, from their shared options."""
    path, content = read_notebook(notebook)
    return {
        "notebook": path,
        "content": content,
        "parameters": read_parameters(pairs, files),
        "gpus": gpus,
        "queue": queue,
        "project": project,
        "name": name or Path(path).stem,
        "tags": list(tags),
        # Workers on this machine run the notebook beside its files.
        "cwd": os.path.dirname(path),
        "timeout": timeout,
        # Once per command: a sweep's runs share one reading of the code.
        "environment": code_state(path, content),
    }
