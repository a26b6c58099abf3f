"""The wheel carries everything a user's `pip install labrun` needs."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_the_namespace_migrations_server_switch_and_labextension(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("labrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if ".data/" in n)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/labrun.json" in names
    # The prebuilt sidebar, where JupyterLab finds it without Node.js
    labext = f"{data}/data/share/jupyter/labextensions/labrun"
    assert f"{labext}/package.json" in names
    assert any(re.fullmatch(rf"{labext}/static/remoteEntry\.\w+\.js", n) for n in names)
    # with the schema of its settings (the Runs panel's metric), or they cannot load
    assert f"{labext}/schemas/labrun/plugin.json" in names
    for module in (
        "labrun/__init__.py",
        "labrun/cli/__init__.py",
        "labrun/jupyter_ext/app.py",
        "labrun/jupyter_ext/store/tables.py",
        "labrun/jupyter_ext/migrations/env.py",
        "labrun/jupyter_ext/migrations/script.py.mako",
        "labrun/jupyter_ext/migrations/versions/0001_initial_schema.py",
        "labrun/kernel_magics/__init__.py",
        "labrun/executor/__init__.py",
    ):
        assert module in names, module
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
