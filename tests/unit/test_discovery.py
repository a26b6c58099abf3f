"""Finding the local Jupyter servers from the files they leave in the runtime dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labrun.client import running_jupyter_servers


def test_only_servers_whose_process_is_alive_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    for name, pid in {"alive": os.getpid(), "gone": gone.pid, "init": 1}.items():
        (tmp_path / f"jpserver-{name}.json").write_text(
            json.dumps({"url": f"http://{name}/", "pid": pid})
        )
    (tmp_path / "jpserver-broken.json").write_text("{not json")
    found = sorted(info["url"] for info in running_jupyter_servers())
    # pid 1 is another user's process here or not: alive either way (EPERM is not "gone").
    assert found == ["http://alive/", "http://init/"]
