"""GroupCommit: what many threads ask while a request is in flight goes in the next one."""

from __future__ import annotations

import threading

import pytest
from support.waiting import wait_for

from labrun.delivery.batches import GroupCommit

WAIT = 30.0  # seconds: only reached if the code under test hangs


class HeldSender:
    """A ``send`` that holds its first batch until released, and records every batch."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.first_in_flight = threading.Event()
        self.release = threading.Event()
        self.fail_with = fail_with

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_in_flight.set()
            assert self.release.wait(WAIT)
        if self.fail_with is not None and len(self.batches) > 1:
            raise self.fail_with
        return [item * 10 for item in items]


def call_from_threads(
    commit: GroupCommit[int, int], items: list[int]
) -> tuple[dict[int, object], list[threading.Thread]]:
    """Each item called from a thread of its own: its answers (or errors), and the threads."""
    answers: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            answers[item] = commit(item)
        except Exception as err:  # noqa: BLE001 - the test reads it
            answers[item] = err

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return answers, threads


def wait_for_waiting(commit: GroupCommit[int, int], count: int) -> None:
    """Until ``count`` calls wait behind the request in flight."""

    def waiting() -> bool:
        with commit._lock:
            return len(commit._waiting) >= count

    wait_for(waiting, WAIT, f"{count} calls to wait", interval=0.001)


def test_calls_made_while_one_is_in_flight_share_the_next_request() -> None:
    send = HeldSender()
    commit = GroupCommit(send)
    first, first_threads = call_from_threads(commit, [1])
    assert send.first_in_flight.wait(WAIT)

    rest, threads = call_from_threads(commit, [2, 3, 4, 5])
    wait_for_waiting(commit, 4)
    send.release.set()
    for thread in first_threads + threads:
        thread.join(WAIT)

    assert send.batches[0] == [1]
    assert sorted(send.batches[1]) == [2, 3, 4, 5] and len(send.batches) == 2
    assert {**first, **rest} == {1: 10, 2: 20, 3: 30, 4: 40, 5: 50}


def test_a_call_alone_is_sent_at_once_and_batches_keep_to_the_most() -> None:
    send = HeldSender()
    send.release.set()  # nothing held: each call alone is its own request
    commit = GroupCommit(send, most=2)
    assert [commit(1), commit(2)] == [10, 20]
    assert send.batches == [[1], [2]]

    held = HeldSender()
    commit = GroupCommit(held, most=2)
    _, first_threads = call_from_threads(commit, [1])
    assert held.first_in_flight.wait(WAIT)
    answers, threads = call_from_threads(commit, [2, 3, 4])
    wait_for_waiting(commit, 3)
    held.release.set()
    for thread in first_threads + threads:
        thread.join(WAIT)
    assert [len(batch) for batch in held.batches] == [1, 2, 1]
    assert answers == {2: 20, 3: 30, 4: 40}


def test_a_failed_request_fails_every_call_of_its_batch_and_no_other() -> None:
    send = HeldSender(fail_with=ConnectionError("server away"))
    commit = GroupCommit(send)
    first, first_threads = call_from_threads(commit, [1])
    assert send.first_in_flight.wait(WAIT)
    rest, threads = call_from_threads(commit, [2, 3])
    wait_for_waiting(commit, 2)
    send.release.set()
    for thread in first_threads + threads:
        thread.join(WAIT)

    assert first == {1: 10}
    assert all(isinstance(rest[item], ConnectionError) for item in (2, 3))
    # And the next call, alone, is sent again
    send.fail_with = None
    assert commit(6) == 60


@pytest.mark.parametrize("count", [50])
def test_every_call_is_answered_under_contention(count: int) -> None:
    batches: list[int] = []

    def send(items: list[int]) -> list[int]:
        batches.append(len(items))
        return [-item for item in items]

    commit = GroupCommit(send)
    answers, threads = call_from_threads(commit, list(range(count)))
    for thread in threads:
        thread.join(WAIT)
    assert answers == {item: -item for item in range(count)}
    assert sum(batches) == count
