"""%mlparams and %mldataset: what a run used, recorded from a real kernel and a real job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from support import param_cases
from support.kernel import Kernel
from support.pool import labrun_cli, wait_finished
from support.server import LabrunServer

from labrun.client import Client


def test_mlparams_sets_and_records_parameters(kernel: Kernel, pool_server: LabrunServer) -> None:
    kernel.ok("%mlparams lr=0.01 epochs=3 name='small model' layers=[64,32]")
    assert kernel.value("(lr, epochs, name, layers)") == (0.01, 3, "small model", [64, 32])
    kernel.ok("%%mlparams\nbatch = 32  # per GPU\nwarmup: float = 0.1")
    kernel.ok("%%mlrun\nused = lr * batch")
    run_id = kernel.value("_mlrun.run_id")
    with Client(pool_server.url, pool_server.token) as client:
        params = client.get_run(run_id).params
    assert params == {
        "lr": 0.01,
        "epochs": 3,
        "name": "small model",
        "layers": [64, 32],
        "batch": 32,
        "warmup": 0.1,
    }
    done = kernel.execute("%%mlparams\nlr = compute()")
    assert not done.ok and "not a literal value" in done.text("stderr")


@param_cases.values
def test_a_value_reads_the_same_in_mlparams(kernel: Kernel, text: str, value: Any) -> None:
    kernel.ok(f"%mlparams read_x={text} read_y=1")
    kernel.ok(f"%%mlparams\nread_z = {text}")
    assert kernel.value("(read_x, read_y, read_z)") == (value, 1, value)


@param_cases.refused
def test_what_is_not_a_value_is_refused_by_mlparams(
    kernel: Kernel, text: str, message: str
) -> None:
    for code in (f"%mlparams read_x={text}", f"%%mlparams\nread_x = {text}"):
        done = kernel.execute(code)
        assert not done.ok and message in done.text("stderr"), code


def test_mlparams_in_a_job_records_the_injected_values(
    pool_server: LabrunServer, tmp_path: Path
) -> None:
    notebook = tmp_path / "train.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext labrun"),
        nbformat.v4.new_code_cell(
            "%%mlparams\nlr = 0.1\nepochs = 2", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("print('training with', lr, epochs)"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, notebook)
    done = labrun_cli(pool_server, "submit", str(notebook), "-p", "lr", "0.5", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    with Client(pool_server.url, pool_server.token) as client:
        run_id = client.list_runs(kind="notebook", limit=1).runs[0].id
        run = wait_finished(client, run_id)
        assert run.status.value == "completed"
        assert run.params["lr"] == 0.5  # papermill's injected value, not the default
        assert run.params["epochs"] == 2  # the default the code used
        log = "".join(e.text for e in client.logs(run_id).entries)
    assert "training with 0.5 2" in log


def test_mldataset_versions_follow_the_content(
    kernel: Kernel, pool_server: LabrunServer, tmp_path: Path
) -> None:
    data = tmp_path / "frames"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n")
    (data / "b.csv").write_text("x,y\n3,4\n")
    first = kernel.ok(f"%mldataset frames {data}")
    # One line, and no repr of what the server answered
    assert first.text().strip() == "dataset frames v1 (new version; 2 files, 16 B, 2 read)"
    assert first.data("text/plain") == []
    again = kernel.ok(f"%mldataset frames {data}")
    assert "frames v1 (unchanged; 2 files" in again.text() and "0 read" in again.text()
    (data / "b.csv").write_text("x,y\n3,5\n")
    changed = kernel.ok(f"%mldataset frames {data}")
    assert "frames v2 (new version" in changed.text() and "1 read" in changed.text()
    kernel.ok(f"%mldataset frames {data} --version v2")
    wrong = kernel.execute(f"%mldataset frames {data} --version v1")
    assert not wrong.ok and "is version v2, not v1" in wrong.error
    # The cells run after it record the version they used.
    kernel.ok("%%mlrun\nrows = 2")
    run_id = kernel.value("_mlrun.run_id")
    with Client(pool_server.url, pool_server.token) as client:
        used = client.run_datasets(run_id)
        assert [(d["dataset"], d["version"]) for d in used] == [("frames", "v2")]
    listed = labrun_cli(pool_server, "datasets")
    assert "frames" in listed.stdout
    shown = labrun_cli(pool_server, "datasets", "show", "frames")
    assert shown.returncode == 0, shown.stderr
    assert "v1" in shown.stdout and "v2" in shown.stdout and str(run_id) in shown.stdout
