"""``--wait`` follows the server's event stream, and polls where it cannot reach it.

A real ``labrun server`` without a pool: the test plays the job's worker, changing the run
over the REST API while the CLI follows it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.notebooks import write_notebook
from support.proxy import http_only_proxy
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.cli.follow import RunEvents, follow
from labrun.client import Client
from labrun.models import CreateRun, LogEntryIn, RunStatus, UpdateRun

NO_STREAM = "No event stream from the server"


def test_events_name_only_the_followed_runs(labrun_server: LabrunServer) -> None:
    with Client(labrun_server.url, labrun_server.token) as client:
        other = client.create_run(CreateRun(project="p", name="other"))
        followed = client.create_run(CreateRun(project="p", name="followed"))
        events = RunEvents(client, [followed.id])
        assert events.connect(), events.problem
        try:
            # The server publishes in this order: the other run's changes come first.
            client.append_logs(other.id, [LogEntryIn(text="not ours\n")])
            client.update_run(other.id, UpdateRun(status=RunStatus.completed))
            client.append_logs(followed.id, [LogEntryIn(text="ours\n")])
            assert events.changes(timeout=60) == {followed.id}
            client.update_run(followed.id, UpdateRun(status=RunStatus.failed))
            assert events.changes(timeout=60) == {followed.id}
            assert events.connected
        finally:
            events.close()


def test_follow_wakes_on_the_stream_not_a_poll(
    labrun_server: LabrunServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(labrun_server.url, labrun_server.token) as client:
        run = client.create_run(CreateRun(project="p", name="followed"))
    result: dict[str, int] = {}

    def follow_it() -> None:
        with Client(labrun_server.url, labrun_server.token) as client:
            # Polls an hour apart: within the test's deadline only the stream can wake it.
            result["code"] = follow(client, [run.id], stream_log=True, interval=3600, resync=3600)

    thread = threading.Thread(target=follow_it, daemon=True)
    thread.start()
    shown = ""

    def printed(text: str) -> bool:
        nonlocal shown
        shown += capsys.readouterr().out
        return text in shown

    with Client(labrun_server.url, labrun_server.token) as client:
        client.append_logs(run.id, [LogEntryIn(text="first line\n")])
        # Shown: the follower subscribed and read the run; it now waits.
        wait_for(lambda: printed("first line"), 60, "the first log line")
        client.append_logs(run.id, [LogEntryIn(text="second line\n")])
        wait_for(lambda: printed("second line"), 60, "the second log line")
        client.update_run(run.id, UpdateRun(status=RunStatus.completed))
    thread.join(60)
    assert not thread.is_alive(), "follow() did not see the run complete"
    assert result["code"] == 0
    printed("")
    assert NO_STREAM not in shown


@pytest.mark.parametrize("through", ["direct", "http-only proxy"])
@pytest.mark.parametrize("outcome", [RunStatus.completed, RunStatus.failed])
def test_submit_wait_follows_and_exits_with_the_run_status(
    labrun_server: LabrunServer, tmp_path: Path, through: str, outcome: RunStatus
) -> None:
    notebook = write_notebook(tmp_path / "job.ipynb", "print('hi')")
    with http_only_proxy(labrun_server.url) as proxy:
        url = labrun_server.url if through == "direct" else proxy
        cli = subprocess.Popen(
            [sys.executable, "-m", "labrun.cli", "submit", str(notebook), "--wait"],
            env={**labrun_server.env, "LABRUN_SERVER_URL": url, "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(cli.stdout or ()), daemon=True)
        reader.start()
        try:
            queued = wait_for(
                lambda: re.search(r"Queued run (\d+)", "".join(lines)), 60, "the run queued"
            )
            run_id = int(queued.group(1))  # type: ignore[union-attr]
            # What the job's worker reports: it started, printed, ended.
            with Client(labrun_server.url, labrun_server.token) as client:
                client.update_run(run_id, UpdateRun(status=RunStatus.running, worker="w1"))
                client.append_logs(run_id, [LogEntryIn(text="hello from the job\n")])
                error = {"message": "cell 0 raised ValueError: bad"}
                client.update_run(
                    run_id,
                    UpdateRun(status=outcome, error=error if outcome == RunStatus.failed else None),
                )
            code = cli.wait(60)
        finally:
            cli.kill()
            reader.join(10)
    output = "".join(lines)
    assert code == (0 if outcome == RunStatus.completed else 1), output
    assert "hello from the job" in output
    if outcome == RunStatus.failed:
        assert "cell 0 raised ValueError: bad" in output
    # Only through the proxy does it say it polls, and why.
    assert (NO_STREAM in output) == (through != "direct"), output
    if through != "direct":
        assert "502" in output and "checking every 0.5 s" in output


def test_logs_follow_prints_each_line_when_the_stream_brings_it(
    labrun_server: LabrunServer,
) -> None:
    with Client(labrun_server.url, labrun_server.token) as client:
        run = client.create_run(CreateRun(project="p", name="followed"))
        client.append_logs(run.id, [LogEntryIn(text="first line\n")])
    # Polls an hour apart: within the test's deadline only the stream can wake it.
    cli = subprocess.Popen(
        [sys.executable, "-m", "labrun.cli", "logs", str(run.id), "--follow", "--interval", "3600"],
        env={**labrun_server.env, "LABRUN_SERVER_URL": labrun_server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(cli.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "first line\n" in lines, 60, "the first log line")
        with Client(labrun_server.url, labrun_server.token) as client:
            client.append_logs(run.id, [LogEntryIn(text="second line\n")])
            wait_for(lambda: "second line\n" in lines, 60, "the second log line")
            client.update_run(run.id, UpdateRun(status=RunStatus.completed))
        code = cli.wait(60)
    finally:
        cli.kill()
        reader.join(10)
    assert code == 0 and lines == ["first line\n", "second line\n"], lines
