"""One way to deliver records to the server in the background: see :mod:`.outbox`."""

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
    encode_batch,
    metrics_op,
)
from .outbox import Outbox, flush_all
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
    "encode_batch",
    "flush_all",
    "metrics_op",
]
