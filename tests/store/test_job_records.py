"""What the store records of a notebook job: its code at submission, the machine at each
claim, and what a re-run carries."""

from __future__ import annotations

import json

import pytest
from support.notebooks import make_notebook

from labrun.errors import InvalidRequest
from labrun.jupyter_ext.store import Store
from labrun.messages import RerunOf
from labrun.models import (
    ClaimRun,
    CodeState,
    RunStatus,
    SubmitJob,
    SubmitSweep,
    SweepReport,
    UpdateRun,
)

CODE = CodeState(
    notebook="/home/alice/train.ipynb",
    submit_host="laptop",
    git={"commit": "abc123", "branch": "main", "dirty": True, "diff": "+lr = 1\n"},
    local_modules={"helpers": {"path": "helpers.py", "sha256": "00ff"}},
)
MACHINE = {
    "python": "3.11.7",
    "platform": "Linux",
    "hostname": "gpu-1",
    "packages": ["numpy==2.1.0", "torch==2.13.0"],
    "versions": {"python": "3.11.7", "torch": "2.13.0", "cuda": "12.1"},
    "gpus": [{"index": 0, "name": "H200", "driver": "550.54"}],
}


def submit(store: Store, **fields: object) -> int:
    content = json.loads(json.dumps(make_notebook("print(1)")))
    return store.jobs.submit(
        SubmitJob(notebook="train.ipynb", content=content, **fields), "alice"
    ).id


def start(store: Store, run_id: int, worker: str, machine: dict[str, object]) -> int:
    (spec,) = store.dispatch.next_attempts([run_id], token_lifetime=3600)
    claim = ClaimRun(attempt=spec.attempt, worker=worker, environment=machine)
    store.dispatch.claim(run_id, claim, max_attempts=3)
    return spec.attempt


def test_a_job_records_its_code_then_each_claim_its_machine(store: Store) -> None:
    run_id = submit(store, environment=CODE)
    assert store.runs.get(run_id).environment == CODE.model_dump(exclude_unset=True)

    start(store, run_id, "w1", MACHINE)
    env = store.runs.get(run_id).environment
    assert env["git"]["commit"] == "abc123" and env["local_modules"] == CODE.local_modules
    assert env["packages"] == MACHINE["packages"] and env["gpus"][0]["driver"] == "550.54"

    # Its worker died: the next attempt's machine replaces the first's, the code stays.
    store.dispatch.lose(run_id, "its worker w1 left the pool", max_attempts=3)
    start(store, run_id, "w2", {**MACHINE, "hostname": "gpu-2", "gpus": []})
    env = store.runs.get(run_id).environment
    assert (env["hostname"], env["gpus"], env["git"]["commit"]) == ("gpu-2", [], "abc123")


def test_a_sweep_records_its_code_once_for_every_run(store: Store) -> None:
    content = json.loads(json.dumps(make_notebook("print(x)", parameters="x = 1")))
    sweep = store.sweeps.submit(
        SubmitSweep(notebook="train.ipynb", content=content, grid={"x": [1, 2]}, environment=CODE),
        "alice",
    )
    for run in [sweep.sweep, *(store.runs.get(r.id) for r in sweep.runs)]:
        assert run.environment["git"] == CODE.git, run.name


def test_a_rerun_keeps_the_code_names_its_original_and_may_be_strict(store: Store) -> None:
    run_id = submit(store, environment=CODE)
    start(store, run_id, "w1", MACHINE)
    store.runs.update(run_id, UpdateRun(status=RunStatus.completed))

    rerun = store.jobs.rerun(run_id, "bob", strict=True)
    # The code is the original's; the machine is recorded anew where the rerun runs.
    assert rerun.environment == {**CODE.model_dump(exclude_unset=True), "rerun_of": run_id}
    (spec,) = store.dispatch.next_attempts([rerun.id], token_lifetime=3600)
    assert spec.rerun == RerunOf(of=run_id, strict=True)  # a reference: the spec stays small

    # A run that recorded no packages cannot be checked strictly, and says so.
    old = submit(store)
    with pytest.raises(InvalidRequest, match=f"run {old} recorded no packages.*without --strict"):
        store.jobs.rerun(old, "bob", strict=True)
    assert store.jobs.rerun(old, "bob").environment == {"rerun_of": old}


def test_a_jobs_priority_reaches_the_dispatcher_and_its_reruns_and_reports(store: Store) -> None:
    # Given jobs of several priorities, a sweep with a report, and a re-run
    plain, urgent = submit(store), submit(store, priority=5)
    content = json.loads(json.dumps(make_notebook("print(x)", parameters="x = 1")))
    report = json.loads(json.dumps(make_notebook("print(sweep)", parameters="sweep = 0")))
    sweep = store.sweeps.submit(
        SubmitSweep(
            notebook="train.ipynb",
            content=content,
            grid={"x": [1]},
            priority=-2,
            report=SweepReport(notebook="report.ipynb", content=report),
        ),
        "alice",
    )
    (child,) = sweep.runs
    rerun = store.jobs.rerun(urgent, "bob")

    # Then the dispatcher reads each one's priority: a re-run's is its original's
    queued = {job.id: job.priority for job in store.dispatch.queued()}
    assert queued == {plain: 0, urgent: 5, child.id: -2, rerun.id: 5}

    # and a sweep's report, queued once its runs ended, takes the sweep's
    start(store, child.id, "w1", MACHINE)
    store.runs.update(child.id, UpdateRun(status=RunStatus.completed))
    store.sweeps.refresh(sweep.sweep.id)
    report_run = store.sweeps.report_run(sweep.sweep.id)
    assert report_run is not None
    assert [job.priority for job in store.dispatch.queued(report_run)] == [-2]


def test_the_sweeps_of_many_runs_move_in_one_look_each(store: Store) -> None:
    # Given two sweeps of two runs each, one with a report, and a plain job
    content = json.loads(json.dumps(make_notebook("print(x)", parameters="x = 1")))
    report = json.loads(json.dumps(make_notebook("print(sweep)", parameters="sweep = 0")))
    plain = SubmitSweep(notebook="train.ipynb", content=content, grid={"x": [1, 2]})
    first = store.sweeps.submit(plain, "alice")
    second = store.sweeps.submit(
        plain.model_copy(update={"report": SweepReport(notebook="r.ipynb", content=report)}),
        "bob",
    )
    runs = [r.id for r in (*first.runs, *second.runs)]
    job = submit(store)

    # When all their runs and the job start, and the dispatcher settles them in one batch
    for run_id in [*runs, job]:
        start(store, run_id, "w1", MACHINE)
    moved = store.sweeps.refresh_of([*runs, job])

    # Then each sweep moved once, to running, and nothing else did
    running = RunStatus.running
    assert moved == [(first.sweep.id, running, None), (second.sweep.id, running, None)]
    assert store.sweeps.refresh_of(runs) == []

    # and once their runs ended, both sweeps end, the one with a report naming it
    for run_id in runs:
        store.runs.update(run_id, UpdateRun(status=RunStatus.completed))
    (done_first, done_second) = store.sweeps.refresh_of(runs)
    assert done_first == (first.sweep.id, RunStatus.completed, None)
    assert done_second.status == RunStatus.completed
    assert done_second.report_run == store.sweeps.report_run(second.sweep.id) is not None
    assert store.sweeps.get(second.sweep.id).sweep.status == RunStatus.completed
