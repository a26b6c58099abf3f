"""Claims and updates of many runs sent in one request (``POST runs/claims``,
``POST runs/updates``), and :class:`GroupCommit`, which gathers them from a worker's threads.

A worker running short jobs on many threads would send the server two requests a job; what
its threads ask at the same moment goes in one request instead, and the server stores it in
one transaction. Each item is still answered on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from labrun.client import Client
from labrun.errors import LabrunError, error_from_response
from labrun.models import (
    MOST_PER_BATCH,
    BatchOutcome,
    ClaimItem,
    ClaimRuns,
    ItemOutcome,
    UpdateItem,
    UpdateRuns,
)

T = TypeVar("T")
R = TypeVar("R")


def claim_runs(client: Client, claims: Sequence[ClaimItem]) -> list[ItemOutcome]:
    """Claim the runs (a worker's): one outcome per claim, in order."""
    answer = client.request("POST", "/runs/claims", body=ClaimRuns(claims=list(claims)))
    return BatchOutcome.model_validate_json(answer.content).results


def update_runs(client: Client, updates: Sequence[UpdateItem]) -> list[ItemOutcome]:
    """Update the runs: one outcome per update, in order."""
    answer = client.request("POST", "/runs/updates", body=UpdateRuns(updates=list(updates)))
    return BatchOutcome.model_validate_json(answer.content).results


def refusal(outcome: ItemOutcome) -> LabrunError | None:
    """The error the server answered for this item (as its request alone would raise it)."""
    if outcome.error is None:
        return None
    return error_from_response(
        outcome.error_status or 500, outcome.error.code, outcome.error.message
    )


class _Call(Generic[T, R]):
    def __init__(self, item: T) -> None:
        self.item = item
        self.turn = threading.Event()  # answered, or the next batch is this call's to send
        self.answered = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """One function of a list, called from many threads with an item each.

    A call that finds no request in flight sends its item at once; the calls that come while
    a request is in flight wait, and the oldest of them sends them all in the next one (at
    most ``most``). Nothing waits for a batch to fill: a thread alone pays one request, as
    without it; many at once share theirs. ``send``'s error goes to every call of its batch.
    """

    def __init__(self, send: Callable[[list[T]], list[R]], *, most: int = MOST_PER_BATCH) -> None:
        self._send = send
        self._most = most
        self._lock = threading.Lock()
        self._waiting: list[_Call[T, R]] = []
        self._in_flight = False

    def __call__(self, item: T) -> R:
        call: _Call[T, R] = _Call(item)
        with self._lock:
            self._waiting.append(call)
            mine = not self._in_flight
            self._in_flight = True
        if not mine:
            call.turn.wait()
        if not call.answered:  # its turn: it is the oldest waiting, so in the next batch
            self._send_next()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _send_next(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
        try:
            results = self._send([call.item for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(batch)} items sent, {len(results)} answers")
        except BaseException as err:  # noqa: BLE001 - each call of the batch raises it
            for call in batch:
                call.error = err
        else:
            for call, result in zip(batch, results, strict=True):
                call.result = result
        with self._lock:
            for call in batch:
                call.answered = True
                call.turn.set()
            if self._waiting:
                self._waiting[0].turn.set()  # the next batch is the oldest waiting call's
            else:
                self._in_flight = False
