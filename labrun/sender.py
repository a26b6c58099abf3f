"""A run's metric points, gathered in memory and handed to the outbox in batches.

``labrun.log`` only appends to a buffer here. The process's :class:`~labrun.delivery.Outbox`
takes what has accumulated every half second (sooner when a batch fills) as one operation
per batch, and delivers it: never lost, retried while the server is away, and split when
the server refuses some points.
"""

from __future__ import annotations

import threading

from labrun.delivery import MetricsOp, Outbox, Point, metrics_op


class MetricSender:
    """The metric buffer of one run."""

    def __init__(self, outbox: Outbox, run_id: int, *, batch_size: int = 10_000) -> None:
        self.outbox = outbox
        self.run_id = run_id
        self.batch_size = batch_size
        self._buffer: list[Point] = []
        self._lock = threading.Lock()
        outbox.add_source(self.take)

    def add(self, points: list[Point]) -> None:
        with self._lock:
            self._buffer.extend(points)
            full = len(self._buffer) >= self.batch_size
        if full:
            self.push()

    def take(self) -> list[MetricsOp]:
        """The buffered points as batches (the outbox polls this)."""
        with self._lock:
            points, self._buffer = self._buffer, []
        return [
            metrics_op(self.run_id, points[start : start + self.batch_size])
            for start in range(0, len(points), self.batch_size)
        ]

    def push(self) -> int:
        """Hand the buffered points to the outbox now; the number to :meth:`Outbox.flush` to."""
        seq = 0
        for op in self.take():
            seq = self.outbox.put(op)
        return seq

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every point logged so far reached the server."""
        self.push()
        return self.outbox.flush(timeout)

    def close(self) -> None:
        """Hand over what is left and stop being polled."""
        self.push()
        self.outbox.remove_source(self.take)
