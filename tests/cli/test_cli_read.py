"""The read-side CLI against a real labrun server."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.server import LabrunServer

from labrun.cli import main
from labrun.client import Client
from labrun.jupyter_ext.store.database import make_engine, schema_revisions
from labrun.models import CreateRun, LogEntryIn, LogMetrics, MetricPoint, UpdateRun


@pytest.fixture
def seeded(
    labrun_server: LabrunServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Client, list[int]]:
    monkeypatch.setenv("LABRUN_SERVER_URL", labrun_server.url)
    monkeypatch.setenv("LABRUN_TOKEN", labrun_server.token)
    client = Client(labrun_server.url, labrun_server.token)
    ids = []
    for lr, loss in [(0.1, 0.4), (0.01, 0.2)]:
        run = client.create_run(
            CreateRun(project="seg", name=f"lr-{lr}", params={"lr": lr, "seed": 1})
        )
        client.log_metrics(run.id, LogMetrics(points=[MetricPoint(key="loss", value=loss, step=1)]))
        client.append_logs(run.id, [LogEntryIn(text=f"training lr={lr}\n")])
        client.update_run(run.id, UpdateRun(status="completed"))
        ids.append(run.id)
    client.create_run(CreateRun(project="other", name="elsewhere"))
    return client, ids


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_table_and_json_with_filters(seeded: tuple[Client, list[int]]) -> None:
    _, ids = seeded
    table = invoke("runs", "--project", "seg")
    assert "lr-0.1" in table and "lr-0.01" in table and "elsewhere" not in table
    listed = json.loads(invoke("runs", "--project", "seg", "--sort", "metrics.loss", "--json"))
    assert [r["id"] for r in listed["runs"]] == [ids[1], ids[0]]
    running = json.loads(invoke("runs", "--status", "running", "--json"))
    assert [r["name"] for r in running["runs"]] == ["elsewhere"]


def test_show_and_runs_print_nan_and_infinity(seeded: tuple[Client, list[int]]) -> None:
    client, _ = seeded
    run = client.create_run(CreateRun(project="diverged", name="nan-run"))
    points = [MetricPoint(key="loss", value=math.nan), MetricPoint(key="grad", value=-math.inf)]
    client.log_metrics(run.id, LogMetrics(points=points))
    text = invoke("show", str(run.id))
    assert re.search(r"loss\s+NaN", text) and re.search(r"grad\s+-∞", text), text
    assert "NaN" in invoke("runs", "--project", "diverged")
    data = json.loads(invoke("show", str(run.id), "--json"))
    assert data["metrics"] == {"loss": "NaN", "grad": "-Infinity"}


def test_show_prints_params_metrics_and_json(seeded: tuple[Client, list[int]]) -> None:
    _, ids = seeded
    text = invoke("show", str(ids[0]))
    assert "lr-0.1" in text and "completed" in text and "0.4" in text
    data = json.loads(invoke("show", str(ids[0]), "--json"))
    assert data["params"] == {"lr": 0.1, "seed": 1} and data["metrics"] == {"loss": 0.4}
    assert data["artifacts"] == [] and data["datasets"] == []


def test_compare_shows_only_differences_unless_all(seeded: tuple[Client, list[int]]) -> None:
    _, ids = seeded
    text = invoke("compare", *map(str, ids))
    assert "params.lr" in text and "params.seed" not in text and "metrics.loss" in text
    assert "params.seed" in invoke("compare", "--all", *map(str, ids))


def test_logs_and_follow_until_the_run_ends(seeded: tuple[Client, list[int]]) -> None:
    client, ids = seeded
    assert invoke("logs", str(ids[0])) == "training lr=0.1\n"
    live = client.create_run(CreateRun(name="live"))

    def finish_later() -> None:
        time.sleep(1.5)
        client.append_logs(live.id, [LogEntryIn(text="epoch 2\n")])
        client.update_run(live.id, UpdateRun(status="completed"))

    threading.Thread(target=finish_later).start()
    client.append_logs(live.id, [LogEntryIn(text="epoch 1\n")])
    assert invoke("logs", str(live.id), "--follow", "--interval", "0.2") == "epoch 1\nepoch 2\n"


def test_errors_are_one_line_with_what_to_do(
    seeded: tuple[Client, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(main, ["show", "9999"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no run with id 9999; `labrun runs` lists the runs"
    negative = CliRunner().invoke(main, ["show", "--", "-1"])
    assert negative.exit_code == 1
    assert negative.output.strip() == "Error: no run with id -1; `labrun runs` lists them"
    monkeypatch.setenv("LABRUN_SERVER_URL", "http://127.0.0.1:9/")
    unreachable = CliRunner().invoke(main, ["runs"])
    assert unreachable.exit_code == 1 and "cannot reach the labrun server" in unreachable.output
    monkeypatch.setenv("LABRUN_TOKEN", "wrong")
    monkeypatch.setenv("LABRUN_SERVER_URL", seeded[0].url)
    refused = CliRunner().invoke(main, ["runs"])
    assert refused.exit_code == 1 and "refused the token" in refused.output


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    head = schema_revisions(make_engine(url))[1]
    assert "database: empty" in invoke("db", "current", "--db-url", url)
    assert f"schema empty -> {head}" in invoke("db", "upgrade", "--db-url", url)
    assert (
        invoke("db", "current", "--db-url", url).strip() == f"database: {head}; this labrun: {head}"
    )


def test_with_no_server_running_read_commands_read_the_store_and_say_so(
    labrun_server: LabrunServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a store a server left, and no server running (none listed in the runtime dir)
    client = Client(labrun_server.url, labrun_server.token)
    run = client.create_run(CreateRun(project="seg", name="offline", params={"lr": 0.5}))
    client.log_metrics(run.id, LogMetrics(points=[MetricPoint(key="loss", value=0.25)]))
    client.append_logs(run.id, [LogEntryIn(text="trained offline\n")])
    client.close()
    labrun_server.stop()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("LABRUN_DB_URL", labrun_server.db_url)

    # When the read commands run, they answer from the store and say so in one line on
    # stderr (so --json stays JSON)
    for args, expected in [
        (["runs"], "offline"),
        (["show", str(run.id)], "0.25"),
        (["logs", str(run.id)], "trained offline"),
        (["compare", str(run.id)], "metrics.loss"),
        (["datasets"], "no datasets yet"),
        (["reports"], "No reports yet"),
    ]:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert expected in result.stdout, (args, result.stdout)
        assert result.stderr.count("No labrun server is running: reading the store") == 1
    listed = CliRunner().invoke(main, ["runs", "--json"], catch_exceptions=False)
    assert [r["name"] for r in json.loads(listed.stdout)["runs"]] == ["offline"]

    # A command that needs the pool says what to start
    (tmp_path / "train.ipynb").write_text("{}")
    submit = CliRunner().invoke(main, ["submit", str(tmp_path / "train.ipynb")])
    assert submit.exit_code == 1
    assert "start `jupyter lab` or `labrun server` on this machine first" in submit.output

    # With no store either, the read commands say the same
    monkeypatch.delenv("LABRUN_DB_URL")
    monkeypatch.setenv("LABRUN_DATA_DIR", str(tmp_path / "fresh"))
    fresh = CliRunner().invoke(main, ["runs"])
    assert fresh.exit_code == 1
    assert "no labrun server is running and there is no run store at" in fresh.output
    assert "start `jupyter lab` or `labrun server`" in fresh.output
    assert not (tmp_path / "fresh").exists()  # reading created nothing
