"""Notebook jobs on a real local pool: submit, fail, sweep, cancel, rerun, bad input."""

from __future__ import annotations

import json
import platform
import re
import socket
from pathlib import Path

import nbformat
import pytest
from support.git import commit_all
from support.notebooks import write_notebook
from support.pool import labrun_cli, wait_finished
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus, UpdateRun


def test_submit_runs_the_notebook_with_its_parameters(
    pool_server: LabrunServer, notebooks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = labrun_cli(
        pool_server,
        "submit",
        str(notebooks / "params.ipynb"),
        "-p", "x", "3",
        "-p", "lr", "1",
        "--name", "p1",
        "--wait",
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello 3 1.0" in result.stdout  # the live log, streamed by --wait

    with Client(pool_server.url, pool_server.token) as client:
        run = client.list_runs(q="p1").runs[0]
        assert run.status == RunStatus.completed
        assert run.kind.value == "notebook"
        assert run.params == {"x": 3, "lr": 1.0} or run.params == {"x": 3, "lr": 1}
        # labrun.log inside the notebook landed on the job's run, with no set-up there.
        series = client.metrics(run.id).series
        assert [s.key for s in series] == ["loss"]
        assert series[0].values == [1.0, 0.5, 1 / 3, 0.25, 0.2]
        log = "".join(e.text for e in client.logs(run.id).entries)
        assert "hello 3 1.0" in log and "[cell 2]" in log
        artifacts = {a.name: a for a in client.artifacts(run.id).artifacts}
        assert set(artifacts) == {"params.ipynb", "params.html"}
        assert artifacts["params.html"].content_type.startswith("text/html")
        assert [t.status.value for t in client.transitions(run.id).transitions] == [
            "queued",
            "running",
            "completed",
        ]

    # --wait -o saved the executed notebook: papermill's injected cell, then the outputs.
    saved = list(out.glob("*-params.ipynb"))
    assert len(saved) == 1 and str(saved[0]) in result.stdout.replace("\n", "")
    executed = nbformat.read(saved[0], as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "x = 3" in injected[0].source and "lr = 1.0" in injected[0].source
    assert executed.cells[-1].outputs[0]["data"]["text/plain"] == "6"


def test_a_failing_cell_fails_the_run_with_its_traceback(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    result = labrun_cli(pool_server, "submit", str(notebooks / "fails.ipynb"), "--wait")
    assert result.returncode == 1
    with Client(pool_server.url, pool_server.token) as client:
        run = client.list_runs(q="fails").runs[0]
        detail = client.get_run(run.id)
    assert detail.status == RunStatus.failed
    assert detail.error is not None
    assert detail.error["cell_index"] == 1 and detail.error["ename"] == "ValueError"
    assert detail.error["evalue"] == "bad value 1"
    assert any("ValueError" in line for line in detail.error["traceback"])
    assert "cell 1 raised ValueError: bad value 1" in result.stdout


def test_sweep_runs_every_combination_grouped_under_one_sweep(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    result = labrun_cli(
        pool_server,
        "sweep",
        str(notebooks / "params.ipynb"),
        "-g", "x", "1,2,3",
        "-g", "lr", "0.1,0.2",
        "-p", "name", "grid",
        "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with Client(pool_server.url, pool_server.token) as client:
        sweep_id = next(r.id for r in client.list_runs(kind="sweep").runs)
        sweep = client.sweep(sweep_id)
    assert sweep.sweep.status == RunStatus.completed
    assert sweep.counts == {"completed": 6}
    combos = sorted((r.params["x"], r.params["lr"], r.params["name"]) for r in sweep.runs)
    assert combos == sorted((x, lr, "grid") for x in (1, 2, 3) for lr in (0.1, 0.2))


def test_random_sample_of_a_grid_is_reproducible(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    args = ["sweep", str(notebooks / "params.ipynb"), "-g", "x", "[1, 2, 3, 4, 5]"]
    args += ["--samples", "2", "--seed", "7", "--json"]
    first = json.loads(labrun_cli(pool_server, *args).stdout)
    second = json.loads(labrun_cli(pool_server, *args).stdout)
    xs = [[r["params"]["x"] for r in sweep["runs"]] for sweep in (first, second)]
    assert xs[0] == xs[1] and len(xs[0]) == 2
    with Client(pool_server.url, pool_server.token) as client:
        for sweep in (first, second):
            for run in sweep["runs"]:
                wait_finished(client, run["id"])


def test_cancel_stops_a_running_job_and_frees_its_worker(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    with Client(pool_server.url, pool_server.token) as client:
        result = labrun_cli(pool_server, "submit", str(notebooks / "slow.ipynb"), "--json")
        run_id = json.loads(result.stdout)["id"]
        wait_for(
            lambda: "started" in "".join(e.text for e in client.logs(run_id).entries),
            what="the slow notebook to start",
        )
        assert client.get_run(run_id).status == RunStatus.running

        cancelled = labrun_cli(pool_server, "cancel", str(run_id))
        assert cancelled.returncode == 0 and f"Cancelled run {run_id}" in cancelled.stdout
        run = client.get_run(run_id)
        assert run.status == RunStatus.cancelled
        # The kernel was stopped: the worker holds no job any more, and the notebook
        # never printed its last line.
        wait_for(
            lambda: all(not w.runs for w in client.pool().workers) and client.pool().running == 0,
            timeout=30,
            what="the worker to let go of the cancelled job",
        )
        log = "".join(e.text for e in client.logs(run_id).entries)
        assert "finished" not in log and "cancelled" in log
        # A finished run cannot be cancelled again: a clear error, nothing changed.
        again = labrun_cli(pool_server, "cancel", str(run_id))
        assert again.returncode == 1 and "already cancelled" in again.stderr


def test_rerun_queues_the_same_notebook_and_parameters(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    first = labrun_cli(
        pool_server, "submit", str(notebooks / "params.ipynb"), "-p", "x", "21", "--json"
    )
    run_id = json.loads(first.stdout)["id"]
    with Client(pool_server.url, pool_server.token) as client:
        wait_finished(client, run_id)
        result = labrun_cli(pool_server, "rerun", str(run_id), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        rerun = client.list_runs(sort="-id", limit=1).runs[0]
        assert rerun.id != run_id and rerun.status == RunStatus.completed
        assert rerun.params == client.get_run(run_id).params
        assert client.get_run(rerun.id).environment["rerun_of"] == run_id
        assert "hello 21" in "".join(e.text for e in client.logs(rerun.id).entries)


def test_a_job_records_its_code_where_submitted_and_its_machine_where_it_ran(
    pool_server: LabrunServer, tmp_path: Path
) -> None:
    # Given a notebook in a git repository that imports a module beside it, changed since
    # the commit, and a module git does not track
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text("SCALE = 2\n")
    notebook = write_notebook(
        project / "train.ipynb",
        "import helpers\nimport scratch\nprint('scaled', x * helpers.SCALE, scratch.NOTE)",
        parameters="x = 1",
    )
    commit = commit_all(project)
    (project / "helpers.py").write_text("SCALE = 3\n")
    (project / "scratch.py").write_text("NOTE = 'untracked'\n")

    # When it is submitted, and swept, from the command line
    result = labrun_cli(pool_server, "submit", str(notebook), "--name", "env-job", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scaled 3 untracked" in result.stdout
    swept = labrun_cli(pool_server, "sweep", str(notebook), "-g", "x", "1,2", "--json")
    sweep = json.loads(swept.stdout)

    with Client(pool_server.url, pool_server.token) as client:
        run = client.get_run(client.list_runs(q="env-job").runs[0].id)
        for child in sweep["runs"]:
            wait_finished(client, child["id"])
        runs = [client.get_run(r["id"]) for r in sweep["runs"]]
        sweep_run = client.get_run(sweep["sweep"]["id"])

    # Then the run records the code as it was at submission...
    env = run.environment
    assert env["notebook"] == str(notebook.resolve())
    git = env["git"]
    assert (git["commit"], git["branch"], git["dirty"]) == (commit, "main", True)
    assert "+SCALE = 3" in git["diff"] and git["untracked"] == ["scratch.py"]
    assert env["local_modules"]["helpers"]["path"] == "helpers.py"
    assert "source" not in env["local_modules"]["helpers"]  # git has it: the diff shows it
    assert env["local_modules"]["scratch"]["source"] == "NOTE = 'untracked'\n"
    # ...and the machine its worker ran it on, as a %%mlrun cell's record has them
    assert any(p.startswith("papermill==") for p in env["packages"])
    assert env["versions"]["python"] == env["python"] == platform.python_version()
    assert env["versions"]["torch"] and "cuda" in env["versions"]
    assert env["hostname"] == socket.gethostname() and env["gpus"] == []
    # A sweep's runs, and the sweep, share one reading of the code; each its worker's
    for child in runs:
        assert child.environment["git"] == git and child.environment["packages"]
    assert sweep_run.environment["git"] == git


def test_a_rerun_names_every_package_that_differs_and_strict_refuses_to_run(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    # Given a job whose record says it ran with other packages than the pool has now
    first = labrun_cli(
        pool_server, "submit", str(notebooks / "params.ipynb"), "-p", "x", "21", "--json"
    )
    run_id = json.loads(first.stdout)["id"]
    with Client(pool_server.url, pool_server.token) as client:
        wait_finished(client, run_id)
        recorded = client.get_run(run_id).environment
        papermill = next(p for p in recorded["packages"] if p.startswith("papermill=="))
        pyyaml = next(p for p in recorded["packages"] if p.lower().startswith("pyyaml=="))
        packages = [p for p in recorded["packages"] if p not in (papermill, pyyaml)]
        packages += ["PyYAML==0.1", "gone-package==1.0"]
        client.update_run(run_id, UpdateRun(environment={**recorded, "packages": packages}))
        differences = [  # by name
            "gone-package 1.0 recorded, not installed here",
            papermill.replace("==", " ") + " installed here, not recorded",
            "PyYAML 0.1 recorded, " + pyyaml.split("==")[1] + " here",
        ]

        # When it is re-run, every difference is named in its log before it runs
        loose = labrun_cli(pool_server, "rerun", str(run_id), "--wait")
        assert loose.returncode == 0, loose.stdout + loose.stderr
        rerun = client.list_runs(sort="-id", limit=1).runs[0]
        log = [e.text for e in client.logs(rerun.id).entries]
        header = f"packages: 3 packages differ from run {run_id}'s record:\n"
        assert log[:4] == [header, *(f"  {d}\n" for d in differences)]
        assert "hello 21" in "".join(log)
        shown = " ".join(loose.stdout.split())  # --wait printed it, as the terminal wraps it
        assert header.strip() in shown and all(d in shown for d in differences)

        # And a strict re-run fails before it runs anything, with the differences
        strict = labrun_cli(pool_server, "rerun", str(run_id), "--strict", "--wait")
        assert strict.returncode == 1, strict.stdout + strict.stderr
        refused = client.get_run(client.list_runs(sort="-id", limit=1).runs[0].id)
        assert refused.status == RunStatus.failed and refused.error is not None
        assert refused.error["type"] == "PackageMismatch"
        assert refused.error["differences"] == differences
        assert f"strict re-run of run {run_id}: 3 packages differ" in refused.error["message"]
        assert "nothing ran" in " ".join(strict.stdout.split())
        log = "".join(e.text for e in client.logs(refused.id).entries)
        assert "hello" not in log and "[cell" not in log

        # A re-run whose worker has what the record says is told so
        client.update_run(run_id, UpdateRun(environment=recorded))
        same = labrun_cli(pool_server, "rerun", str(run_id), "--strict", "--wait")
        assert same.returncode == 0, same.stdout + same.stderr
        count = len(recorded["packages"])
        assert f"packages: the same {count} as run {run_id} recorded" in same.stdout


# (labrun's arguments, what its error says); {params}: the parameterized test notebook,
# {tmp}: a folder of the test's own.
BAD_INPUT = [
    (["submit", "{tmp}/missing.ipynb"], "no notebook at"),
    (["submit", "{tmp}/broken.ipynb"], "is not valid JSON"),
    (["submit", "{params}", "--queue", "nope"], "no queue named 'nope'; the queues are: default"),
    (["submit", "{params}", "-p", "epochs", "3"], "unknown parameter epochs"),
    (["submit", "{params}", "-p", "x", "abc"], "parameter x expects int"),
    # The GPU error names the workers there are, so the user sees what to ask for.
    (["submit", "{params}", "--gpus", "2"], "no worker offers 2 GPUs"),
    (["submit", "{params}", "--gpus", "2"], "the workers are: tcp://127.0.0.1:"),
    (["sweep", "{params}", "-g", "x", "1,oops"], "parameter x expects int"),
    (["submit", "{params}", "-f", "{tmp}/none.yaml"], "cannot read parameters file"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_gets_a_clear_error_and_queues_nothing(
    pool_server: LabrunServer, notebooks: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "broken.ipynb").write_text("{not json")
    args = [a.format(tmp=tmp_path, params=notebooks / "params.ipynb") for a in args]
    with Client(pool_server.url, pool_server.token) as client:
        before = client.list_runs().total
        result = labrun_cli(pool_server, *args)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert client.list_runs().total == before


def test_queues_and_pool_commands(pool_server: LabrunServer) -> None:
    created = labrun_cli(pool_server, "queues", "create", "urgent", "--priority", "10")
    assert created.returncode == 0, created.stderr
    listing = labrun_cli(pool_server, "queues")
    assert listing.stdout.index("urgent") < listing.stdout.index("default")
    pool = json.loads(labrun_cli(pool_server, "pool", "--json").stdout)
    assert pool["state"] == "ready" and len(pool["workers"]) == 2
    assert all(w["alive"] for w in pool["workers"])
    # Each worker's CPU and memory, once its heartbeat brought a host sample.
    with Client(pool_server.url, pool_server.token) as client:
        wait_for(
            lambda: all(w.telemetry for w in client.workers().workers if w.alive),
            60,
            "a host sample from every worker",
        )
    text = labrun_cli(pool_server, "pool").stdout
    assert "Pool ready" in text and pool["workers"][0]["id"] in text
    assert len(re.findall(r"\d+% +\d+\.\d/\d+ GiB", text)) == 2, text
