"""What the store records of a notebook job: its code at submission, the machine at each
claim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.notebooks import make_notebook

from labrun.jupyter_ext.store import Database, Store, check_schema
from labrun.models import (
    ClaimRun,
    CodeState,
    SubmitJob,
    SubmitSweep,
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


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    db = Database(db_url)
    check_schema(db.engine, auto_upgrade=True)
    yield Store(db, artifact_root=str(tmp_path / "artifacts"))
    db.close()


def submit(store: Store, **fields: object) -> int:
    content = json.loads(json.dumps(make_notebook("print(1)")))
    return store.jobs.submit(
        SubmitJob(notebook="train.ipynb", content=content, **fields), "alice"
    ).id


def start(store: Store, run_id: int, worker: str, machine: dict[str, object]) -> int:
    (spec,) = store.jobs.dispatch([run_id])
    claim = ClaimRun(attempt=spec["attempt"], worker=worker, environment=machine)
    store.jobs.claim(run_id, claim, max_attempts=3)
    return spec["attempt"]


def test_a_job_records_its_code_then_each_claim_its_machine(store: Store) -> None:
    run_id = submit(store, environment=CODE)
    assert store.runs.get(run_id).environment == CODE.model_dump(exclude_unset=True)

    start(store, run_id, "w1", MACHINE)
    env = store.runs.get(run_id).environment
    assert env["git"]["commit"] == "abc123" and env["local_modules"] == CODE.local_modules
    assert env["packages"] == MACHINE["packages"] and env["gpus"][0]["driver"] == "550.54"

    # Its worker died: the next attempt's machine replaces the first's, the code stays.
    store.jobs.lose(run_id, "its worker w1 left the pool", max_attempts=3)
    start(store, run_id, "w2", {**MACHINE, "hostname": "gpu-2", "gpus": []})
    env = store.runs.get(run_id).environment
    assert (env["hostname"], env["gpus"], env["git"]["commit"]) == ("gpu-2", [], "abc123")


def test_a_sweep_records_its_code_once_for_every_run(store: Store) -> None:
    content = json.loads(json.dumps(make_notebook("print(x)", parameters="x = 1")))
    sweep = store.jobs.submit_sweep(
        SubmitSweep(notebook="train.ipynb", content=content, grid={"x": [1, 2]}, environment=CODE),
        "alice",
    )
    for run in [sweep.sweep, *(store.runs.get(r.id) for r in sweep.runs)]:
        assert run.environment["git"] == CODE.git, run.name
