"""A worker's claims, and its ended runs' updates, many in one transaction.

A pool of short jobs sends the scheduler of record two requests a job (its claim, its end);
one transaction each cost that server more than everything else it does for the job. A
worker sends what started or ended on it meanwhile together (``POST runs/claims``,
``POST runs/updates``), and they are stored here in one transaction: the runs read in one
statement, the transitions written in one flush. Each item is still granted or refused on
its own, as its request alone would have been.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from labrun.errors import LabrunError, NotFound
from labrun.models import ClaimItem, ErrorBody, ItemOutcome, RunStatus, UpdateItem

from .database import Database
from .dispatch import DispatchStore
from .runs import RunStore
from .tables import Run


class _Item(Protocol):
    run_id: int


I = TypeVar("I", bound=_Item)


@dataclass
class Outcome:
    """What became of one item: the run's status and sweep after it, or the error."""

    run_id: int
    status: RunStatus | None = None
    parent_id: int | None = None
    error: LabrunError | None = None

    def answer(self) -> ItemOutcome:
        if self.error is None:
            return ItemOutcome(run_id=self.run_id, status=self.status)
        return ItemOutcome(
            run_id=self.run_id,
            error=ErrorBody(message=self.error.message, code=self.error.code),
            error_status=self.error.status,
        )


class _Refused(Exception):
    """An item failed midway through its change: the transaction is tried again without it."""


class BatchStore:
    def __init__(self, db: Database, runs: RunStore, dispatch: DispatchStore) -> None:
        self.db = db
        self.runs = runs
        self.dispatch = dispatch

    def claim(self, claims: Sequence[ClaimItem], *, max_attempts: int) -> list[Outcome]:
        """Each claim as ``DispatchStore.claim`` grants or refuses it, all in one transaction."""

        def start(session: Session, run: Run, claim: ClaimItem) -> None:
            self.dispatch.start(session, run, claim, max_attempts)

        return self._each(claims, start)

    def update(self, updates: Sequence[UpdateItem]) -> list[Outcome]:
        """Each update as ``RunStore.update`` applies or refuses it, in one transaction."""
        return self._each(updates, self.runs.apply)

    def _each(self, items: Sequence[I], change: Callable[[Session, Run, I], None]) -> list[Outcome]:
        """``change`` each item's run in one transaction, each item on its own: one that
        raises is answered with its error, and the transaction is rolled back and run
        again without it (rare: a cancel or a lost worker raced the item, and then the
        others of the batch, written again, cost one more transaction)."""
        if not items:
            return []
        refused: dict[int, LabrunError] = {}
        while True:
            try:
                with self.db.session() as session:
                    return self._attempt(session, items, change, refused)
            except _Refused:
                continue

    @staticmethod
    def _attempt(
        session: Session,
        items: Sequence[I],
        change: Callable[[Session, Run, I], None],
        refused: dict[int, LabrunError],
    ) -> list[Outcome]:
        wanted = {item.run_id for i, item in enumerate(items) if i not in refused}
        runs = {run.id: run for run in session.scalars(select(Run).where(Run.id.in_(wanted)))}
        outcomes = []
        for i, item in enumerate(items):
            run = runs.get(item.run_id)
            if i not in refused and run is None:
                refused[i] = NotFound(
                    f"no run with id {item.run_id!r}; `labrun runs` lists the runs"
                )
            if i in refused:
                outcomes.append(Outcome(item.run_id, error=refused[i]))
                continue
            assert run is not None
            try:
                change(session, run, item)
            except LabrunError as err:
                refused[i] = err
                raise _Refused from err
            outcomes.append(Outcome(run.id, RunStatus(run.status), run.parent_id))
        session.flush()
        return outcomes
