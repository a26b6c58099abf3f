"""The public API (labrun.init/log/...) against a real `labrun server` process."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from support.server import LabrunServer
from support.waiting import wait_for

import labrun
from labrun.client import Client
from labrun.delivery import Outbox, UpdateRunOp
from labrun.errors import InvalidRequest, ServerUnavailable
from labrun.models import CreateRun, RunStatus, UpdateRun


@pytest.fixture
def client(labrun_server: LabrunServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("LABRUN_SPOOL_DIR", str(tmp_path / "spool"))
    return Client(labrun_server.url, labrun_server.token)


def total_points(client: Client, run_id: int, key: str) -> list[int]:
    series = {s.key: s for s in client.metrics(run_id, keys=[key], max_points="all").series}
    return series[key].steps if key in series else []


def test_init_log_finish_records_everything(client: Client, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    run = labrun.init(project="demo", name="first", params={"lr": 0.01}, client=client)
    for step in range(500):
        labrun.log({"loss": 1 / (step + 1), "acc": step / 500})
    labrun.log_params(batch_size=32)
    labrun.log_artifact(model)
    labrun.finish()

    described = client.get_run(run.id)
    assert described.status.value == "completed"
    assert described.params == {"lr": 0.01, "batch_size": 32}
    assert described.metrics == {"loss": pytest.approx(1 / 500), "acc": pytest.approx(499 / 500)}
    assert total_points(client, run.id, "loss") == list(range(500))
    assert [a.name for a in client.artifacts(run.id).artifacts] == ["model.pt"]
    assert described.environment["python"] == sys.version.split()[0]


def test_log_artifact_of_a_folder_never_follows_a_link_out_of_it(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a folder with a file, a link to a file inside it, and links to files outside
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the run")
    folder = tmp_path / "checkpoints"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "latest.pt").symlink_to(folder / "model.pt")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "sub" / "secret").symlink_to(secret)

    # When the folder is logged
    run = labrun.init(name="folder", client=client)
    labrun.log_artifact(folder)
    labrun.finish()

    # Then only the files inside it are stored, each link out named in a warning
    artifacts = client.artifacts(run.id).artifacts
    assert [a.name for a in artifacts] == ["checkpoints/latest.pt", "checkpoints/model.pt"]
    assert client.download_artifact(run.id, "checkpoints/latest.pt") == b"weights"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert any(str(folder / "passwd") in m and "/etc/passwd" in m for m in skipped)
    assert any(str(folder / "sub" / "secret") in m for m in skipped)
    # And no response tells where the server keeps the files
    assert all("uri" not in a.model_dump() for a in artifacts)
    listed = client.request("GET", f"/runs/{run.id}/artifacts").text
    assert "sha256/" not in listed and str(tmp_path) not in listed


def test_log_rejects_non_numbers_with_a_hint(client: Client) -> None:
    run = labrun.init(client=client)
    with pytest.raises(InvalidRequest, match=r"metric 'name' must be a number.*log_params"):
        run.log({"name": "resnet"})
    run.finish()


def test_log_refuses_numbers_written_as_text(client: Client) -> None:
    run = labrun.init(client=client)
    with pytest.raises(InvalidRequest, match=r"metric 'loss' must be a number, got str 'nan'"):
        run.log({"loss": "nan"})
    run.finish()


def test_nan_and_infinity_come_back_as_logged(client: Client) -> None:
    # Given a loss that diverged, then became NaN
    run = labrun.init(name="diverged", client=client)
    for step, loss in enumerate([0.5, math.inf, -math.inf, math.nan]):
        run.log({"loss": loss}, step=step)
    run.finish()

    # Then the series, the latest value and the list read back as floats, as logged
    values = client.metrics(run.id, keys=["loss"]).series[0].values
    assert values[:3] == [0.5, math.inf, -math.inf] and math.isnan(values[3])
    assert math.isnan(client.get_run(run.id).metrics["loss"])
    listed = client.list_runs(spark="loss").runs
    assert math.isnan(next(r for r in listed if r.id == run.id).metrics["loss"])


def test_log_without_init_says_what_to_do() -> None:
    labrun.finish()
    with pytest.raises(InvalidRequest, match=r"call labrun.init\(\) first"):
        labrun.log({"loss": 1.0})


def test_run_context_manager_marks_failure(client: Client) -> None:
    with pytest.raises(ZeroDivisionError), labrun.init(client=client) as run:
        1 / 0  # noqa: B018
    described = client.get_run(run.id)
    assert described.status.value == "failed"
    assert described.error == {"type": "ZeroDivisionError", "message": "division by zero"}


def test_no_point_is_lost_while_the_server_is_down(
    labrun_server: LabrunServer, client: Client
) -> None:
    # Given a run logging with the server up
    run = labrun.init(name="outage", client=client)
    for step in range(1000):
        run.log({"loss": float(step)}, step=step)
    assert run.flush(timeout=30)

    # When the server stops mid-run, the run keeps logging (spooled locally)
    labrun_server.stop()
    for step in range(1000, 3000):
        run.log({"loss": float(step)}, step=step)
    assert not run.flush(timeout=2), "points cannot be delivered while the server is down"
    assert run._outbox.spool.count_points() == 2000

    # Then, once the server is back, every point arrives exactly once
    labrun_server.start()
    for step in range(3000, 4000):
        run.log({"loss": float(step)}, step=step)
    run.finish(timeout=60)
    assert total_points(client, run.id, "loss") == list(range(4000))
    assert run._outbox.spool.count_points() == 0


def test_points_spooled_by_an_ended_process_are_sent_by_the_next(
    labrun_server: LabrunServer, client: Client, tmp_path: Path
) -> None:
    # Given a job process attached to a run, logging while the server is down, and ending
    # with its points still spooled
    run = labrun.init(name="left-behind", client=client)
    attached, go = tmp_path / "attached", tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        import labrun
        run = labrun.init()
        pathlib.Path({str(attached)!r}).touch()
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.05)
        for step in range(300):
            labrun.log({{"loss": float(step)}}, step=step)
        run.finish(timeout=1)
        """
    )
    env = {**labrun_server.env, "LABRUN_RUN_ID": str(run.id)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )
    wait_for(attached.exists, what="the script to attach to the run")
    labrun_server.stop()
    go.touch()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert "wait in" in stderr  # it said where its points are kept

    # When the server is back and the next process starts logging
    labrun_server.start()
    later = labrun.init(name="next", client=Client(labrun_server.url, labrun_server.token))
    later.finish(timeout=60)

    # Then the ended process's points arrived
    assert total_points(client, run.id, "loss") == list(range(300))
    run.finish()


def test_unreachable_server_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABRUN_SERVER_URL", "http://127.0.0.1:9/")
    with pytest.raises(ServerUnavailable, match="LABRUN_SERVER_URL"):
        labrun.init()


def test_discovery_finds_a_running_jupyter_server(
    labrun_server: LabrunServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # labrun server writes its jpserver-*.json into the runtime dir, as Jupyter does.
    monkeypatch.delenv("LABRUN_SERVER_URL", raising=False)
    with Client() as found:
        assert found.url == labrun_server.url
        assert found.version().api == 1


@pytest.mark.parametrize("bad_at", [0, 100], ids=["in-the-first-batch", "mid-run"])
def test_a_refused_point_is_named_and_every_other_point_is_stored(
    client: Client, caplog: pytest.LogCaptureFixture, bad_at: int
) -> None:
    # Given a run that logs 1,100 good points and, among them, one the server refuses (a
    # key longer than the 256 characters a key may have)
    run = labrun.init(name="one-bad-point", client=client)
    bad_key = "k" * 300
    with caplog.at_level("WARNING", logger="labrun"):
        for step in range(1100):
            if step == bad_at:
                run.log({bad_key: 1.0}, step=step)
                run.flush()  # a batch of its own at the start; mid-run it shares one
            run.log({"loss": float(step)}, step=step)
        run.finish()

    # Then every good point is stored, the run completed, and the bad point is named once
    assert total_points(client, run.id, "loss") == list(range(1100))
    assert client.get_run(run.id).status.value == "completed"
    named = [r.getMessage() for r in caplog.records if bad_key[:50] in r.getMessage()]
    assert len(named) == 1 and f"step {bad_at}" in named[0], named
    assert "refused 1 metric point" in named[0]


def test_a_status_the_server_missed_at_finish_is_delivered_by_the_next_process(
    labrun_server: LabrunServer, client: Client, tmp_path: Path
) -> None:
    # Given a script whose server is down when it finishes its run
    created = tmp_path / "created"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        import labrun
        run = labrun.init(name="finished-offline")
        labrun.log({{"loss": 1.0}})
        assert labrun.flush()
        pathlib.Path({str(created)!r}).write_text(str(run.id))
        while pathlib.Path({str(created)!r}).exists():
            time.sleep(0.05)
        labrun.log({{"loss": 0.5}})
        labrun.finish()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**labrun_server.env, "LABRUN_SPOOL_DIR": os.environ["LABRUN_SPOOL_DIR"]},
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(created.exists, what="the script to create its run")
    run_id = int(created.read_text())
    labrun_server.stop()
    created.unlink()
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert "'completed' status" in stderr and "wait in" in stderr, stderr

    # When the server is back and the next labrun process on this machine logs
    labrun_server.start()
    assert client.get_run(run_id).status.value == "running"
    later = labrun.init(name="next", client=Client(labrun_server.url, labrun_server.token))
    later.finish(timeout=60)

    # Then the first run is completed, with its last point
    finished = client.get_run(run_id)
    assert finished.status.value == "completed"
    assert finished.metrics == {"loss": 0.5}


def test_run_updates_waiting_in_the_outbox_go_in_one_request(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three runs, and an outbox that holds what is put until released
    runs = [client.create_run(CreateRun(name=f"batched {i}")).id for i in range(3)]
    outbox = Outbox(client, spool_dir=tmp_path / "outbox-spool")
    released = threading.Event()
    outbox.hold = lambda put_at: 0.0 if released.is_set() else 60.0
    requests: list[tuple[str, str]] = []
    send = outbox.client.request

    def counted(method: str, path: str, **kwargs: Any) -> Any:
        requests.append((method, path))
        return send(method, path, **kwargs)

    outbox.client.request = counted  # type: ignore[method-assign]

    # When each run's end, and an update of a run that does not exist, wait there together
    for run_id in runs:
        outbox.put(UpdateRunOp(run_id=run_id, body=UpdateRun(status=RunStatus.completed)))
    outbox.put(UpdateRunOp(run_id=10**9, body=UpdateRun(name="nobody's")))
    with caplog.at_level(logging.INFO, logger="labrun"):
        released.set()
        outbox.wake()
        assert outbox.flush(60)
    outbox.close()

    # Then they went in one request: each run ended, and the missing one was named
    assert requests == [("POST", "/runs/updates")]
    assert [client.get_run(run_id).status for run_id in runs] == [RunStatus.completed] * 3
    assert f"a record of run {10**9} was not taken: no run with id {10**9}" in caplog.text
