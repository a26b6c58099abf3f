"""Finding the local Jupyter servers from the files they leave in the runtime dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labrun.client import discover, running_jupyter_servers


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


def test_inside_a_jupyterhub_server_its_own_server_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Users of one hub may share an OS account, and so a runtime dir: the newest server
    # there (bob's) is not the one a kernel of alice's server must use
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "jpserver-bob.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9/user/bob/", "token": "bobs", "pid": os.getpid()})
    )
    for name in ("LABRUN_SERVER_URL", "LABRUN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8888/user/alice/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alices")
    assert discover() == ("http://127.0.0.1:8888/user/alice/", "alices")
    # LABRUN_SERVER_URL still wins (a job's kernel on a worker)
    monkeypatch.setenv("LABRUN_SERVER_URL", "http://server:8888/")
    assert discover() == ("http://server:8888/", "")
