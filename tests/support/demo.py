"""`labrun demo` as a newcomer runs it: once, on a machine with no labrun server running."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Demo:
    data: Path
    workdir: Path
    returncode: int
    output: str
    env: dict[str, str]
    """The demo's user's environment: what a new shell of theirs has, LABRUN_DATA_DIR (the
    data dir their ``jupyter lab`` uses) and their runtime dir (which lists their servers)."""


def run_demo(base: Path, *, columns: int, cwd: Path | None = None) -> Demo:
    """Run ``labrun demo`` in ``cwd`` (the repository, for ``make demo``) with a terminal of
    ``columns``; its data, work and runtime folders under ``base``.

    Its own runtime folder: the demo must start its server, not find another test's.
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LABRUN_")},
        "LABRUN_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "labrun.cli", "demo", "--epochs", "1", "--workdir", str(base)],
        env={**env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
        cwd=cwd,
    )
    output = done.stdout + done.stderr
    (base / "demo.log").write_text(output)  # to read when a test of it fails
    return Demo(base / "data", base, done.returncode, output, env)
