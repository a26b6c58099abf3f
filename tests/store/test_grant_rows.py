"""Grants in the store: asked for once per key, given only by the scheduler of record,
released by their user, or by the scheduler of record once their run ended or their
kernel is gone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from labrun.errors import NotFound, Unauthorized
from labrun.jupyter_ext.scheduling import GRANT_IDS
from labrun.jupyter_ext.store import Store
from labrun.jupyter_ext.store.leases import DISPATCHER, LeaseLost
from labrun.jupyter_ext.store.tables import utcnow
from labrun.jupyter_ext.store.team_tables import Grant
from labrun.models import CreateRun, GrantStatus, RequestGrant, RunKind, RunStatus, UpdateRun


def ask(store: Store, key: str, user: str = "alice", **fields: object) -> int:
    grant, _ = store.grants.request(RequestGrant(key=key, gpus=1, **fields), user)  # type: ignore[arg-type]
    return grant.id


def test_a_grant_is_asked_for_once_and_given_only_by_the_lease_holder(store: Store) -> None:
    first = ask(store, "cell-0001")
    assert ask(store, "cell-0001") == first  # asking again answers the same grant
    with pytest.raises(Unauthorized, match="another user's"):
        ask(store, "cell-0001", user="bob")
    with pytest.raises(NotFound, match="no queue named 'nope'"):
        ask(store, "cell-0002", queue="nope")

    # The scheduler of record sees it as a job of its user in its queue
    (entry,) = store.grants.entries(GrantStatus.waiting)
    assert (entry.id, entry.user, entry.queue, entry.gpus) == (
        GRANT_IDS + first,
        "alice",
        "default",
        1,
    )

    old = store.leases.acquire(DISPATCHER, "host-a:1:1/1", seconds=-1)
    new = store.leases.acquire(DISPATCHER, "host-b:2:2/1", seconds=60)
    assert old is not None and new is not None
    with pytest.raises(LeaseLost):
        store.grants.admit([first], old)
    assert store.grants.get("cell-0001").status == GrantStatus.waiting  # type: ignore[union-attr]
    assert store.grants.admit([first], new)[0] == {first: "cell-0001"}
    assert store.grants.admit([first], new)[0] == {}  # granted once
    assert store.grants.entries(GrantStatus.granted)[0].id == GRANT_IDS + first


def test_released_by_its_user_or_with_the_next_request(store: Store) -> None:
    first, second = ask(store, "cell-0001"), ask(store, "cell-0002")
    assert store.grants.release(["cell-0001"], "bob") == []  # not bob's
    assert store.grants.release(["cell-0001"], "alice") == [first]
    assert store.grants.release(["cell-0001"], "alice") == []  # once
    # The next request carries the cells that ended
    _, released = store.grants.request(
        RequestGrant(key="cell-0003", gpus=1, release=["cell-0002"]), "alice"
    )
    assert released == [second]
    assert [g.key for g in store.grants.current()] == ["cell-0003"]


def test_the_grants_of_ended_runs_and_gone_kernels_are_released(store: Store) -> None:
    ended = ask(store, "cell-ended", client="kernel-a")
    running = ask(store, "cell-running", client="kernel-a")
    young = ask(store, "cell-young", client="kernel-gone")
    old = ask(store, "cell-old", client="kernel-gone")
    run, _ = (
        store.runs.create(CreateRun(key=key, kind=RunKind.cell, status=RunStatus.running), "alice")
        for key in ("cell-ended", "cell-running")
    )
    store.runs.update(run.id, UpdateRun(status=RunStatus.completed))
    with store.db.session() as session:  # a grant asked for a while ago
        session.execute(
            update(Grant).where(Grant.id == old).values(created_at=utcnow() - timedelta(minutes=1))
        )

    released = store.grants.release_stale(connected=["kernel-a"])

    # The ended run's, and the old one of a kernel no longer connected; not a young one
    # (its kernel may have connected just now), nor one whose run goes on
    assert sorted(released) == sorted([ended, old])
    assert {g.key for g in store.grants.current()} == {"cell-running", "cell-young"}
    assert young and running
