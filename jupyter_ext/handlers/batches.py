"""Many runs' claims or updates in one request: what a worker started or ended meanwhile
(see :mod:`labrun.jupyter_ext.store.batches`). Each item is granted or refused on its own,
with the answer ``POST runs/{id}/claim`` or ``PATCH runs/{id}`` would have given it, and
each is a row of its own in the audit log."""

from __future__ import annotations

from labrun.errors import LabrunError
from labrun.models import (
    BatchOutcome,
    ClaimRuns,
    RunStatus,
    UpdateItem,
    UpdateRuns,
)

from ..store.batches import Outcome
from .base import LabrunHandler, operation
from .runs import cancel_run


class BatchHandler(LabrunHandler):
    def answer(
        self, outcomes: list[Outcome], *, announced: frozenset[int] = frozenset()
    ) -> BatchOutcome:
        """The response; each item's audit row, and an event for each run changed (but those
        at ``announced`` positions, already announced)."""
        self.audit_items = [
            (str(o.run_id), {} if o.error is None else {"error": o.error.code}) for o in outcomes
        ]
        for i, outcome in enumerate(outcomes):
            if outcome.error is None and i not in announced:
                assert outcome.status is not None
                self.events.publish(
                    "run.updated", {"id": outcome.run_id, "status": outcome.status.value}
                )
        return BatchOutcome(results=[outcome.answer() for outcome in outcomes])


class RunClaimsHandler(BatchHandler):
    @operation(
        "A worker starts several dispatched runs at once: each claim is granted or refused "
        "on its own, as `POST runs/{id}/claim` would",
        body=ClaimRuns,
        response=BatchOutcome,
        errors=(400, 403),
        access="pool",
        action="run.claim",
    )
    async def post(self, body: ClaimRuns) -> BatchOutcome:
        outcomes = await self.call(
            self.store.batches.claim, body.claims, max_attempts=self.app.max_attempts
        )
        for claim, outcome in zip(body.claims, outcomes, strict=True):
            if outcome.error is None:
                self.app.dispatcher.claimed(claim.run_id, claim.worker, outcome.parent_id)
        return self.answer(outcomes)


class RunUpdatesHandler(BatchHandler):
    @operation(
        "Change several runs at once (a worker's ended jobs): each update is applied or "
        "refused on its own, as `PATCH runs/{id}` would",
        body=UpdateRuns,
        response=BatchOutcome,
        errors=(400, 403),
        action="run.update",
    )
    async def post(self, body: UpdateRuns) -> BatchOutcome:
        updates = body.updates
        refused = await self._refused(updates)
        # A cancel stops the run's job too: one at a time, as PATCH does it, and announced
        # there. The others are stored together.
        cancels = {i for i, u in enumerate(updates) if u.status == RunStatus.cancelled}
        together = [
            i for i, u in enumerate(updates) if u.run_id not in refused and i not in cancels
        ]
        batch = [updates[i] for i in together]
        stored = dict(zip(together, await self.call(self.store.batches.update, batch), strict=True))
        outcomes = []
        for i, update in enumerate(updates):
            if update.run_id in refused:
                outcomes.append(Outcome(update.run_id, error=refused[update.run_id]))
            elif i in cancels:
                outcomes.append(await self._cancel(update))
            else:
                outcomes.append(stored[i])
                if update.log and stored[i].error is None:
                    self.events.publish("run.log", {"run_id": update.run_id})
        return self.answer(outcomes, announced=frozenset(cancels))

    async def _refused(self, updates: list[UpdateItem]) -> dict[int, LabrunError]:
        """The runs this caller may not change, each with the error that says why."""
        refused = {}
        for run_id in {u.run_id for u in updates}:
            try:
                await self.authorize_run(run_id)
            except LabrunError as err:
                refused[run_id] = err
        return refused

    async def _cancel(self, update: UpdateItem) -> Outcome:
        try:
            run = await cancel_run(self, update.run_id, update)
        except LabrunError as err:
            return Outcome(update.run_id, error=err)
        return Outcome(update.run_id, run.status, run.parent_id)
