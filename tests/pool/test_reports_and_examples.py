"""Reports on a real pool: `labrun report`, a sweep's report, and the example notebooks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.notebooks import write_notebook
from support.pool import labrun_cli
from support.server import LabrunServer

from labrun.client import Client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def report_notebook(tmp_path: Path) -> Path:
    return write_notebook(
        tmp_path / "tiny_report.ipynb",
        "# CODE_ONLY_MARKER: a comment only the code shows\nprint('Report for', title)",
        parameters="title = 'nothing'\nsweep = 0",
    )


def test_a_report_runs_renders_without_code_and_is_listed(
    pool_server: LabrunServer, report_notebook: Path, tmp_path: Path
) -> None:
    # When a report notebook is run with a parameter and saved
    out = tmp_path / "out.html"
    done = labrun_cli(
        pool_server, "report", str(report_notebook), "-p", "title", "Q3", "-o", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(out) in done.stdout

    # Then its HTML shows the outputs and not the code
    html = out.read_text()
    assert "Report for Q3" in html
    assert "CODE_ONLY_MARKER" not in html

    # And it is listed, with its parameters and its run
    listed = json.loads(labrun_cli(pool_server, "reports", "--json").stdout)["reports"]
    ours = [r for r in listed if r["params"].get("title") == "Q3"]
    assert len(ours) == 1 and ours[0]["name"] == "tiny_report" and ours[0]["has_notebook"]

    # --code keeps the code
    coded = tmp_path / "coded"
    done = labrun_cli(
        pool_server,
        "report",
        str(report_notebook),
        "--code",
        "--name",
        "with code",
        "-o",
        str(coded),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (saved,) = coded.glob("report-*.html")
    assert "CODE_ONLY_MARKER" in saved.read_text()


def test_a_report_that_cannot_take_the_sweep_queues_nothing(
    pool_server: LabrunServer, notebooks: Path, tmp_path: Path
) -> None:
    no_sweep = write_notebook(tmp_path / "plain.ipynb", "print(1)", parameters="title = 'x'")
    before = Client(pool_server.url, pool_server.token).list_runs().total
    done = labrun_cli(
        pool_server,
        "sweep",
        str(notebooks / "params.ipynb"),
        "-g",
        "x",
        "1,2",
        "--report",
        str(no_sweep),
    )
    assert done.returncode == 1
    assert "cannot take the sweep" in done.stderr and "sweep = 0" in done.stderr
    assert Client(pool_server.url, pool_server.token).list_runs().total == before


def test_the_example_sweep_and_its_report(pool_server: LabrunServer, tmp_path: Path) -> None:
    # Given the example notebooks, copied so their data lands in a scratch folder
    for name in ("train_classifier.ipynb", "sweep_report.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, tmp_path / name)

    # When the classifier is swept over two learning rates, with the report at the end
    done = labrun_cli(
        pool_server,
        "sweep",
        str(tmp_path / "train_classifier.ipynb"),
        *("-g", "lr", "0.05,0.2", "-p", "epochs", "2"),
        *("--report", str(tmp_path / "sweep_report.ipynb")),
        *("--wait", "-o", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Then both runs completed, with curves, the dataset version and the model
    client = Client(pool_server.url, pool_server.token)
    sweep_id = next(
        r for r in client.list_runs(kind="sweep").runs if "train_classifier" in r.name
    ).id
    runs = client.sweep(sweep_id).runs
    assert [r.status.value for r in runs] == ["completed", "completed"]
    for run in runs:
        assert run.metrics["val_accuracy"] > 0.5
        assert {a.name for a in client.artifacts(run.id).artifacts} >= {"model.pt"}
        assert [d["dataset"] for d in client.run_datasets(run.id)] == ["synthetic"]
    versions = {d["version"] for run in runs for d in client.run_datasets(run.id)}
    assert len(versions) == 1, "every run trains on the same content-hashed data"

    # And the report has the summary table, the best run and the curves
    (report_html,) = (tmp_path / "out").glob("report-*.html")
    html = report_html.read_text()
    assert "Summary" in html and "<table" in html
    named = re.search(r"<strong>Run (\d+)</strong>", html)
    assert named is not None, "the report names the best run"
    top = max(r.metrics["val_accuracy"] for r in runs)
    assert next(r for r in runs if r.id == int(named[1])).metrics["val_accuracy"] == top
    assert html.count("data:image/png;base64") >= 2  # the curves and the parameter effect

    # And a re-run with the same seed reproduces the curves exactly
    again = client.rerun(runs[0].id)
    done = labrun_cli(pool_server, "logs", str(again.id), "--follow")
    assert client.get_run(again.id).status.value == "completed", done.stdout[-2000:]
    first = client.metrics(runs[0].id, keys=["loss"]).series[0].values
    second = client.metrics(again.id, keys=["loss"]).series[0].values
    assert first == second


def test_the_quickstart_notebook_runs_top_to_bottom(
    pool_server: LabrunServer, tmp_path: Path
) -> None:
    # Given the quickstart copied to a scratch folder, run as a researcher would: a kernel
    # that finds the server, executed cell by cell
    notebook = tmp_path / "quickstart.ipynb"
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", notebook)
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "out.ipynb")],
        env={**pool_server.env, "PYTHONWARNINGS": "ignore"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    # Then its cells ran on the pool and were recorded, with the data version they used
    client = Client(pool_server.url, pool_server.token)
    cells = {r.name: r for r in client.list_runs(kind="cell", q="quickstart").runs}
    assert set(cells) == {
        "quickstart-train",
        "quickstart-background",
        "quickstart-load",
        "quickstart-use",
    }
    assert all(r.status.value == "completed" for r in cells.values())
    train = cells["quickstart-train"]
    assert train.params == {"lr": 0.5, "epochs": 200, "seed": 0}
    assert len(client.metrics(train.id, keys=["loss"]).series[0].values) == 200
    assert [d["dataset"] for d in client.run_datasets(train.id)] == ["quickstart-data"]
    executed = (tmp_path / "out.ipynb").read_text()
    assert "trained on the pool: final loss" in executed and "back in the notebook" in executed
