"""One way to deliver records to the server in the background: see :mod:`.outbox`."""

from __future__ import annotations

import atexit
import logging
import time

from .ops import (
    AppendLogsOp,
    ArtifactOp,
    CancelRunOp,
    CreateReportOp,
    CreateRunOp,
    LinkDatasetOp,
    MetricsOp,
    Point,
    UpdateRunOp,
    abandon,
    encode_batch,
    is_abandoned,
    metrics_op,
)
from .outbox import Outbox
from .spool import Spool

__all__ = [
    "AppendLogsOp",
    "ArtifactOp",
    "CancelRunOp",
    "CreateReportOp",
    "CreateRunOp",
    "LinkDatasetOp",
    "MetricsOp",
    "Outbox",
    "Point",
    "Spool",
    "UpdateRunOp",
    "abandon",
    "encode_batch",
    "flush_all",
    "is_abandoned",
    "metrics_op",
]


def flush_all(timeout: float = 30.0) -> bool:
    """Deliver everything this process has put or logged, to every server: True when it all
    arrived within ``timeout`` (a job's kernel runs this before it is shut down)."""
    deadline = time.monotonic() + timeout
    return all(outbox.flush(max(0.0, deadline - time.monotonic())) for outbox in Outbox.open_ones())


@atexit.register
def _close_all() -> None:
    # labrun.tracking imports this package before it registers its own at-exit finish, and
    # at-exit functions run last-registered first: the runs finish, then their last records
    # are sent, or kept in the spool for the next process.
    for outbox in Outbox.open_ones():
        left = outbox.close(timeout=2.0)
        if left:
            logging.getLogger("labrun").warning(
                "labrun: %d record(s) could not reach %s; they wait in %s and are sent the "
                "next time labrun runs on this machine",
                left,
                outbox.client.url,
                outbox.spool.path,
            )
