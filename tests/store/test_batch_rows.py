"""Claims and updates of many runs in one transaction (a worker's batch): each item is
granted or refused on its own, and a refused one leaves the others' changes whole."""

from __future__ import annotations

import json

from support.notebooks import make_notebook

from labrun.errors import Conflict, NotFound
from labrun.jupyter_ext.store import Store
from labrun.models import ClaimItem, RunStatus, SubmitJob, UpdateItem


def dispatched(store: Store, count: int) -> list[tuple[int, int]]:
    """``count`` jobs, each dispatched: (run id, attempt)."""
    content = json.loads(json.dumps(make_notebook("print(1)")))
    ids = [
        store.jobs.submit(SubmitJob(notebook="nb.ipynb", content=content), "alice").id
        for _ in range(count)
    ]
    specs = store.dispatch.next_attempts(ids, token_lifetime=3600)
    return [(spec.run_id, spec.attempt) for spec in specs]


def running_transitions(store: Store, run_id: int) -> int:
    return sum(t.status == "running" for t in store.runs.transitions(run_id))


def test_each_claim_of_a_batch_is_granted_or_refused_on_its_own(store: Store) -> None:
    (a, a_attempt), (b, b_attempt), (c, c_attempt) = dispatched(store, 3)
    claims = [
        ClaimItem(run_id=a, attempt=a_attempt, worker="w1", devices=[0]),
        ClaimItem(run_id=b, attempt=b_attempt + 1, worker="w1"),  # not the dispatched one
        ClaimItem(run_id=10**9, attempt=1, worker="w1"),  # no such run
        ClaimItem(run_id=a, attempt=a_attempt, worker="w2"),  # a second claim of a
        ClaimItem(run_id=c, attempt=c_attempt, worker="w1", environment={"python": "3.11"}),
    ]

    outcomes = store.batches.claim(claims, max_attempts=3)

    assert [o.run_id for o in outcomes] == [a, b, 10**9, a, c]
    assert [o.status for o in outcomes] == [RunStatus.running, None, None, None, RunStatus.running]
    errors = [type(o.error) for o in outcomes]
    assert errors == [type(None), Conflict, NotFound, Conflict, type(None)]
    # The granted ones are stored whole, once; the refused one is as it was, still claimable
    run_a, run_c = store.runs.get(a), store.runs.get(c)
    assert (run_a.status, run_a.worker, run_a.devices) == (RunStatus.running, "w1", [0])
    assert run_c.environment is not None and run_c.environment["python"] == "3.11"
    assert running_transitions(store, a) == running_transitions(store, c) == 1
    assert store.runs.get(b).status == RunStatus.queued
    (granted,) = store.batches.claim(
        [ClaimItem(run_id=b, attempt=b_attempt, worker="w1")], max_attempts=3
    )
    assert granted.status == RunStatus.running and granted.error is None


def test_each_update_of_a_batch_is_applied_or_refused_on_its_own(store: Store) -> None:
    (a, a_attempt), (b, b_attempt), (c, c_attempt) = dispatched(store, 3)
    store.batches.claim(
        [
            ClaimItem(run_id=run_id, attempt=attempt, worker="w1")
            for run_id, attempt in ((a, a_attempt), (b, b_attempt), (c, c_attempt))
        ],
        max_attempts=3,
    )
    store.batches.update([UpdateItem(run_id=b, status=RunStatus.failed)])

    outcomes = store.batches.update(
        [
            UpdateItem(run_id=a, status=RunStatus.completed, attempt=a_attempt),
            UpdateItem(run_id=b, status=RunStatus.running),  # failed runs stay failed
            UpdateItem(run_id=c, status=RunStatus.completed, attempt=c_attempt + 1),  # not its
            UpdateItem(run_id=c, name="renamed", tags=["batch"]),
        ]
    )

    assert [o.status for o in outcomes] == [
        RunStatus.completed,
        None,
        None,
        RunStatus.running,
    ]
    assert [type(o.error) for o in outcomes] == [type(None), Conflict, Conflict, type(None)]
    run_a, run_b, run_c = (store.runs.get(run_id) for run_id in (a, b, c))
    assert run_a.status == RunStatus.completed and run_a.ended_at is not None
    assert run_b.status == RunStatus.failed
    assert (run_c.status, run_c.name, run_c.tags) == (RunStatus.running, "renamed", ["batch"])
    assert [t.status for t in store.runs.transitions(a)][-1] == "completed"
