"""The scheduler of record's lease: one holder at a time, taken over when it expires, and a
fence that refuses what an earlier holder still tries to change."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.notebooks import make_notebook

from labrun.jupyter_ext.store import Store
from labrun.jupyter_ext.store.leases import DISPATCHER, LeaseLost, server_id
from labrun.models import SubmitJob


def test_one_holder_at_a_time_until_it_lets_go(store: Store) -> None:
    leases = store.leases
    first = leases.acquire(DISPATCHER, "host-a:1:1/1", seconds=60, user="alice", url="http://a/")
    assert first is not None
    # Another server waits while the lease lives; the holder renews it at the same epoch.
    assert leases.acquire(DISPATCHER, "host-b:2:2/1", seconds=60) is None
    renewed = leases.acquire(DISPATCHER, "host-a:1:1/1", seconds=60, user="alice", url="http://a/")
    assert renewed == first
    info = leases.info(DISPATCHER)
    assert info.held and (info.holder, info.user, info.url) == (
        "host-a:1:1/1",
        "alice",
        "http://a/",
    )

    leases.release(first)
    assert not leases.info(DISPATCHER).held
    second = leases.acquire(DISPATCHER, "host-b:2:2/1", seconds=60)
    assert second is not None and second.epoch == first.epoch + 1


def test_an_expired_lease_is_taken_over_and_fences_its_old_holder(store: Store) -> None:
    leases = store.leases
    old = leases.acquire(DISPATCHER, "host-a:1:1/1", seconds=-1)  # already expired
    assert old is not None
    new = leases.acquire(DISPATCHER, "host-b:2:2/1", seconds=60)
    assert new is not None and new.epoch == old.epoch + 1

    run = store.jobs.submit(SubmitJob(notebook="a.ipynb", content=make_notebook("x = 1")), "alice")
    # The old holder's dispatch is refused whole: no attempt counted, no token issued.
    with pytest.raises(LeaseLost, match="no longer holds the dispatcher lease"):
        store.dispatch.next_attempts([run.id], 60.0, old)
    assert store.runs.get(run.id).attempt == 0
    with pytest.raises(LeaseLost):
        store.dispatch.lose(run.id, "its worker left", max_attempts=3, hold=old)
    # The new holder's goes through.
    (spec,) = store.dispatch.next_attempts([run.id], 60.0, new)
    assert spec.attempt == 1


def test_a_holder_of_this_machine_whose_process_is_gone_lets_go_at_once(store: Store) -> None:
    # A server id as a process that has exited would have made it.
    gone = subprocess.run(
        [
            sys.executable,
            "-c",
            "from labrun.jupyter_ext.store.leases import server_id; print(server_id())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert store.leases.acquire(DISPATCHER, gone, seconds=60) is not None
    mine = server_id()
    taken = store.leases.acquire(DISPATCHER, mine, seconds=60)
    assert taken is not None and taken.holder == mine
