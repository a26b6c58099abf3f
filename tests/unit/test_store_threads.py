"""The store's threads: calls in the order they came, but urgent ones (a GPU cell's grant,
which a person waits on) before those still queued."""

from __future__ import annotations

import functools
import threading

import pytest

from labrun.jupyter_ext.store.threads import StoreThreads


def test_an_urgent_call_goes_before_those_queued_but_not_before_the_one_running() -> None:
    threads = StoreThreads(1, "test-db")  # SQLite's: one thread
    started, go_on = threading.Event(), threading.Event()
    order: list[str] = []

    def running() -> str:
        started.set()
        go_on.wait(30)
        order.append("running")
        return "done"

    def fails() -> None:
        raise ValueError("bad call")

    try:
        # Given a call running and three queued behind it (records sent in the background)
        first = threads.submit(running)
        assert started.wait(30)
        queued = [threads.submit(functools.partial(order.append, f"queued {i}")) for i in range(3)]
        # When an urgent call comes after them
        urgent = threads.submit(functools.partial(order.append, "urgent"), urgent=True)
        failing = threads.submit(fails, urgent=True)
        go_on.set()
        # Then it runs once the running one ended, before the queued ones
        assert first.result(30) == "done"
        for future in [urgent, *queued]:
            future.result(30)
        assert order == ["running", "urgent", "queued 0", "queued 1", "queued 2"]
        # and a call's error is its caller's
        with pytest.raises(ValueError, match="bad call"):
            failing.result(30)
    finally:
        threads.shutdown()
    with pytest.raises(RuntimeError, match="stopped"):
        threads.submit(functools.partial(order.append, "late"))
