"""Metric time series: bulk ingest with a latest-value summary, and range queries."""

from __future__ import annotations

import math
import time
from typing import Any, cast

from sqlalchemy import Table, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labrun.models import LogMetrics, MetricSeries, MetricsIngested, MetricsQuery, RunMetrics

from .database import Database
from .runs import RunStore
from .tables import SQLITE_NAN, Metric, MetricBatch, MetricSummary

METRICS = cast(Table, Metric.__table__)
SUMMARIES = cast(Table, MetricSummary.__table__)
POINT_COLUMNS = ("run_id", "key", "step", "value", "time")


def downsample(steps: list[int], values: list[Any], times: list[float], most: int):
    """Keep at most ``most`` points: the first, the last, and each bucket's min and max
    (and its first NaN, where the series has any).

    Keeping extremes rather than every n-th point means a spike in a long curve stays
    visible after downsampling, and so does a loss that became NaN.
    """
    n = len(steps)
    if n <= most:
        return steps, values, times
    nan = [v is not None and math.isnan(v) for v in values]
    has_nan = any(nan)
    buckets = max(1, (most - 2) // (3 if has_nan else 2))
    keep = {0, n - 1}
    size = (n - 2) / buckets
    for b in range(buckets):
        lo, hi = 1 + int(b * size), 1 + int((b + 1) * size)
        # NaN compares false with everything: it is no extreme, but kept on its own.
        idx = [i for i in range(lo, min(hi, n - 1)) if values[i] is not None]
        numbers = [i for i in idx if not nan[i]]
        if numbers:
            keep.add(min(numbers, key=values.__getitem__))
            keep.add(max(numbers, key=values.__getitem__))
        if has_nan:
            keep.update([i for i in idx if nan[i]][:1])
    chosen = sorted(keep)
    return [steps[i] for i in chosen], [values[i] for i in chosen], [times[i] for i in chosen]


class MetricStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        # The hot path: one plain INSERT executed by the driver over a list of tuples.
        # Going through SQLAlchemy's Core executemany costs about as much again as the
        # insert itself (per-row bind processing of dicts), and these columns need none.
        dialect = db.engine.dialect
        columns = ", ".join(dialect.identifier_preparer.quote(c) for c in POINT_COLUMNS)
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self._insert_points = (
            f"INSERT INTO {METRICS.name} ({columns}) "
            f"VALUES ({', '.join([marker] * len(POINT_COLUMNS))})"
        )
        # The driver-level insert skips MetricFloat's binding of NaN: do it here.
        self._nan_as_text = db.dialect == "sqlite"

    def ingest(self, run_id: int, batch: LogMetrics) -> MetricsIngested:
        """Store a batch of points in one transaction; a batch id seen before is skipped."""
        now = time.time()
        rows = [
            (run_id, p.key, p.step, p.value, p.time if p.time is not None else now)
            for p in batch.points
        ]
        rows += [(run_id, k, s, v, t if t is not None else now) for k, v, s, t in batch.rows]
        stored: list[tuple[Any, ...]] = rows
        if self._nan_as_text and any(r[3] != r[3] for r in rows):  # only NaN != NaN
            stored = [r if r[3] == r[3] else (*r[:3], SQLITE_NAN, r[4]) for r in rows]
        try:
            with self.db.session() as session:
                RunStore.load(session, run_id)
                if batch.batch_id is not None:
                    seen = session.get(MetricBatch, (run_id, batch.batch_id))
                    if seen is not None:
                        return MetricsIngested(accepted=0, duplicate=True)
                    session.add(
                        MetricBatch(run_id=run_id, batch_id=batch.batch_id, points=len(rows))
                    )
                    session.flush()
                if rows:
                    session.connection().exec_driver_sql(self._insert_points, stored)
                    self._summarize(session, rows)
        except IntegrityError:
            # Two copies of one batch raced past the check above; the other one won.
            if batch.batch_id is None:
                raise
            return MetricsIngested(accepted=0, duplicate=True)
        return MetricsIngested(accepted=len(rows))

    def _summarize(
        self, session: Session, rows: list[tuple[int, str, int, float | None, float]]
    ) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for run_id, key, step, value, t in rows:
            # min and max ignore NaN (and None); the latest value may be NaN.
            number = value if value is not None and not math.isnan(value) else None
            s = latest.get(key)
            if s is None:
                latest[key] = {
                    "run_id": run_id,
                    "key": key,
                    "step": step,
                    "value": value,
                    "time": t,
                    "min": number,
                    "max": number,
                    "count": 1,
                }
                continue
            s["count"] += 1
            if step >= s["step"]:
                s["step"], s["value"], s["time"] = step, value, t
            if number is not None:
                s["min"] = number if s["min"] is None else min(s["min"], number)
                s["max"] = number if s["max"] is None else max(s["max"], number)
        stmt = self._insert(SUMMARIES).values(list(latest.values()))
        new = stmt.excluded
        newer = new.step >= SUMMARIES.c.step
        stmt = stmt.on_conflict_do_update(
            index_elements=[SUMMARIES.c.run_id, SUMMARIES.c.key],
            set_={
                "step": case((newer, new.step), else_=SUMMARIES.c.step),
                "value": case((newer, new.value), else_=SUMMARIES.c.value),
                "time": case((newer, new.time), else_=SUMMARIES.c.time),
                "min": case(
                    (SUMMARIES.c.min.is_(None), new.min),
                    (new.min < SUMMARIES.c.min, new.min),
                    else_=SUMMARIES.c.min,
                ),
                "max": case(
                    (SUMMARIES.c.max.is_(None), new.max),
                    (new.max > SUMMARIES.c.max, new.max),
                    else_=SUMMARIES.c.max,
                ),
                "count": SUMMARIES.c.count + new.count,
            },
        )
        session.execute(stmt)

    def query(self, run_id: int, query: MetricsQuery) -> RunMetrics:
        with self.db.session() as session:
            RunStore.load(session, run_id)
            stmt = select(Metric.key, Metric.step, Metric.value, Metric.time).where(
                Metric.run_id == run_id
            )
            if query.keys:
                stmt = stmt.where(Metric.key.in_(query.keys))
            if query.step_min is not None:
                stmt = stmt.where(Metric.step >= query.step_min)
            if query.step_max is not None:
                stmt = stmt.where(Metric.step <= query.step_max)
            stmt = stmt.order_by(Metric.key, Metric.step, Metric.id)
            series: dict[str, tuple[list[int], list[Any], list[float]]] = {}
            for key, step, value, t in session.execute(stmt):
                steps, values, times = series.setdefault(key, ([], [], []))
                steps.append(step)
                values.append(value)
                times.append(t)
        out = []
        for key, (steps, values, times) in series.items():
            if query.max_points != "all":
                steps, values, times = downsample(steps, values, times, query.max_points)
            out.append(MetricSeries(key=key, steps=steps, values=values, times=times))
        return RunMetrics(run_id=run_id, series=out)
