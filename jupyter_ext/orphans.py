"""Cells whose kernel went away before recording how they ended, settled by the server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labrun.errors import Conflict
from labrun.messages import RunError
from labrun.models import RunStatus, UpdateRun
from labrun.records import CellRecord

from .store.tables import utcnow

if TYPE_CHECKING:
    from distributed import Client

    from .store import Store

logger = logging.getLogger("labrun.dispatcher")

# A cell younger than this is left to its kernel, which records it within seconds;
ORPHAN_GRACE = 10.0
# one that no worker knows how it ended counts as lost after this long.
ORPHAN_GIVE_UP = 600.0


async def settle_orphan_cells(
    client: Client, store: Store, call: Callable[..., Any], publish: Callable[[str, Any], None]
) -> None:
    """Record how the %%mlrun cells of kernels that went away ended.

    A kernel records its cells itself, in the background, and flushes at exit; one that
    was killed first leaves its runs queued or running. Such a run's kernel (its Dask
    client) is no longer connected and its task is gone from the scheduler: the worker
    that ran it kept how it ended, and that is recorded now. A run no worker knows of is
    lost once ORPHAN_GIVE_UP has passed.
    """
    from labrun.executor.tasks import cell_outcomes

    assert client.scheduler is not None
    cells = await call(store.runs.unsettled_cells, ORPHAN_GRACE)
    if not cells:
        return
    # A lambda: pickled by value, so a team's scheduler needs no labrun installed.
    connected = set(
        await client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients))
    )
    tasks = await client.scheduler.get_task_status(
        keys=[f"labrun-cell-{cell.key}" for cell in cells]
    )
    orphans = [
        cell
        for cell in cells
        if cell.pool_client is not None
        and cell.pool_client not in connected
        and tasks.get(f"labrun-cell-{cell.key}") is None
    ]
    if not orphans:
        return
    found: dict[str, dict[str, Any]] = {}
    answers = await client.run(cell_outcomes, [cell.key for cell in orphans], on_error="return")
    for answer in answers.values():
        if isinstance(answer, dict):
            found.update(answer)
    now = utcnow()
    for cell in orphans:
        record = found.get(cell.key)
        if record is not None:
            update = CellRecord.model_validate(record).update()
        elif (now - cell.created_at).total_seconds() > ORPHAN_GIVE_UP:
            message = (
                "its kernel went away before recording how it ended, and no worker remembers it"
            )
            error = RunError(type="Lost", message=message).record()
            update = UpdateRun(status=RunStatus.lost, error=error)
        else:
            continue
        try:
            run = await call(store.runs.update, cell.run_id, update)
        except Conflict:
            continue  # recorded meanwhile (its kernel's spool, a cancel)
        logger.info(
            "labrun: settled cell run %d of a kernel that went away: %s",
            run.id,
            run.status.value,
        )
        publish("run.updated", run)
