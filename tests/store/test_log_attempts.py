"""A run's log by attempt: a job re-queued after its worker died runs again, and each
attempt's part of the log stays apart, the retried one's starting with a marker."""

from __future__ import annotations

import json
import re

import pytest
from support.notebooks import make_notebook

from labrun.errors import Conflict, NotFound
from labrun.jupyter_ext.store import Store
from labrun.models import (
    AppendLogs,
    AttemptRef,
    ClaimRun,
    CreateRun,
    LogEntryIn,
    LogTailQuery,
    RunStatus,
    SubmitJob,
    UpdateRun,
)


def start(store: Store, run_id: int, worker: str) -> None:
    (spec,) = store.dispatch.next_attempts([run_id], token_lifetime=3600)
    store.dispatch.claim(run_id, ClaimRun(attempt=spec.attempt, worker=worker), max_attempts=3)


def texts(store: Store, run_id: int, attempt: int | None = None) -> list[str]:
    tail = store.logs.tail(run_id, LogTailQuery(attempt=attempt))
    return [e.text for e in tail.entries]


def test_each_attempt_has_its_part_of_the_log_and_a_retry_starts_with_a_marker(
    store: Store,
) -> None:
    content = json.loads(json.dumps(make_notebook("print(1)")))
    run_id = store.jobs.submit(SubmitJob(notebook="train.ipynb", content=content), "alice").id
    start(store, run_id, "w1")
    store.logs.append(run_id, AppendLogs(entries=[LogEntryIn(text="epoch 1\n")], attempt=1))
    store.dispatch.lose(run_id, "its worker w1 left the pool", max_attempts=3)
    start(store, run_id, "w2")
    # A line the worker does not label belongs to the run's latest attempt.
    store.logs.append(run_id, AppendLogs(entries=[LogEntryIn(text="epoch 1 again\n")]))
    # A line of attempt 1 that arrives late (its worker only stopped answering) is still 1's.
    store.logs.append(run_id, AppendLogs(entries=[LogEntryIn(text="late\n")], attempt=1))

    marker = "--- attempt 2 of 3 on w2 ---\n"
    assert texts(store, run_id) == ["epoch 1\n", marker, "epoch 1 again\n", "late\n"]
    assert texts(store, run_id, attempt=1) == ["epoch 1\n", "late\n"]
    assert texts(store, run_id, attempt=2) == [marker, "epoch 1 again\n"]
    entries = store.logs.tail(run_id, LogTailQuery()).entries
    assert [(e.attempt, e.stream) for e in entries][:2] == [(1, "stdout"), (2, "system")]
    with pytest.raises(NotFound, match=f"run {run_id} has had 2 attempts; ask for 1 to 2"):
        store.logs.tail(run_id, LogTailQuery(attempt=3))


def test_a_run_that_was_never_dispatched_logs_as_its_first_attempt(store: Store) -> None:
    run = store.runs.create(CreateRun(name="script"), "alice")
    store.logs.append(run.id, AppendLogs(entries=[LogEntryIn(text="hello\n")]))
    assert texts(store, run.id, attempt=1) == ["hello\n"]
    with pytest.raises(NotFound, match=f"run {run.id} has had 1 attempt; ask for 1, not 2"):
        store.logs.tail(run.id, LogTailQuery(attempt=2))


def test_a_lost_attempts_late_status_and_files_do_not_overwrite_the_next_ones(
    store: Store,
) -> None:
    """A worker cut off from the server sends its job's end when it is back: too late."""
    content = json.loads(json.dumps(make_notebook("print(1)")))
    run_id = store.jobs.submit(SubmitJob(notebook="train.ipynb", content=content), "alice").id
    start(store, run_id, "w1")
    store.dispatch.lose(run_id, "its worker w1 stopped sending heartbeats", max_attempts=3)
    late = UpdateRun(status=RunStatus.completed, attempt=1)
    refused = f"run {run_id} is queued at attempt 1: this update of attempt 1 is not kept"
    with pytest.raises(Conflict, match=refused):
        store.runs.update(run_id, late)
    start(store, run_id, "w2")
    refused = f"run {run_id} is running at attempt 2: this update of attempt 1 is not kept"
    with pytest.raises(Conflict, match=refused):
        store.runs.update(run_id, late)
    with pytest.raises(Conflict, match=re.escape("the file 'train.ipynb' of attempt 1 is not")):
        store.artifacts.put(run_id, "train.ipynb", b"late", content_type=None, attempt=1)
    store.artifacts.put(run_id, "train.ipynb", b"second", content_type=None, attempt=2)
    assert (
        store.runs.update(run_id, UpdateRun(status=RunStatus.completed, attempt=2)).worker == "w2"
    )
    # A record that names no attempt (a script's, a kernel's) is taken as before.
    store.artifacts.put(run_id, "notes.txt", b"n", content_type=None)
    assert store.artifacts.get(run_id, "train.ipynb").size == len(b"second")
    assert store.runs.get(run_id).status == RunStatus.completed


def test_an_attempt_its_worker_gave_up_is_lost_where_it_still_runs_there(store: Store) -> None:
    """A worker cut off from the server stops its jobs itself (executor/fencing.py) and says
    so in its next heartbeat: a server that had not counted it gone (it was down meanwhile)
    loses the job then, instead of waiting for it for ever."""
    content = json.loads(json.dumps(make_notebook("print(1)")))
    run_id = store.jobs.submit(SubmitJob(notebook="train.ipynb", content=content), "alice").id
    start(store, run_id, "w1")
    # Not this worker's, or not this attempt: nothing changes.
    assert (
        store.dispatch.abandoned("w2", [AttemptRef(run_id=run_id, attempt=1)], max_attempts=3) == []
    )
    assert (
        store.dispatch.abandoned("w1", [AttemptRef(run_id=run_id, attempt=2)], max_attempts=3) == []
    )
    assert store.runs.get(run_id).status == RunStatus.running
    gave_up = [AttemptRef(run_id=run_id, attempt=1)]
    assert store.dispatch.abandoned("w1", gave_up, max_attempts=3) == [run_id]
    history = [(t.status, t.message) for t in store.runs.transitions(run_id)]
    assert history[-2:] == [
        (RunStatus.lost, "its worker w1 gave it up"),
        (RunStatus.queued, "retry 2 of 3"),
    ]
    # Said again (the answer to that heartbeat was lost), or after the server had lost the
    # attempt itself and dispatched the next: the next attempt runs on.
    assert store.dispatch.abandoned("w1", gave_up, max_attempts=3) == []
    start(store, run_id, "w1")
    assert store.dispatch.abandoned("w1", gave_up, max_attempts=3) == []
    assert store.runs.get(run_id).status == RunStatus.running
