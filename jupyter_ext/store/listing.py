"""Pages of the runs list: every sort as index walks, paged by offset or by cursor.

A sort is a list of *phases*, each an index walk: the runs that have the sort's value in
the order of an index, then the runs without it by id (they come last either way). A page
by offset skips rows of the walks; a page by cursor starts the walk right after the last
row of the previous page (keyset pagination), so a page deep in the list costs what the
first page costs. The cursor carries the phase, that row's sort values and its id.

A listed run is a row of its summary columns (not an ORM object: no environment, no job's
notebook), with its metric's sparkline read by a short index walk per run.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy import bindparam, column, func, literal_column, select, table, tuple_, union_all
from sqlalchemy.orm import Session, aliased

from labrun.errors import InvalidRequest
from labrun.models import INT64_MAX, ListRunsQuery

from .tables import Metric, MetricSummary, Param, Project, Run, utcnow

# The types of sort values a cursor carries.
Id = Annotated[int, Field(ge=0, le=INT64_MAX)]
Number = Annotated[float, Field(allow_inf_nan=True)]


# Sortable columns: the column, its type, and whether a run may lack a value (those runs
# come last, by id).
COLUMNS: dict[str, tuple[Any, Any, bool]] = {
    "id": (Run.id, Id, False),
    "created_at": (Run.created_at, datetime, False),
    "started_at": (Run.started_at, datetime, True),
    "ended_at": (Run.ended_at, datetime, True),
    "name": (Run.name, str, True),
    "status": (Run.status, str, False),
    "user": (Run.user, str, False),
    "queue": (Run.queue, str, True),
    "kind": (Run.kind, str, False),
    "project": (Project.name, str, False),
    # Finished runs only: a running run's duration grows, so those come last, by id.
    "duration": (Run.duration, Number, True),
}


@functools.cache
def _adapter(types: tuple[Any, ...]) -> TypeAdapter[Any]:
    shape: Any = tuple.__class_getitem__(types)  # tuple[types...], built at run time
    return TypeAdapter(shape)


@dataclass
class Phase:
    """One index walk: ``stmt`` (the filtered runs) narrowed to the runs it covers, the
    sort values it walks in order (the run's id last) and their types, which a cursor's
    values must have."""

    stmt: Any
    keys: list[Any]
    types: list[Any]

    def values(self, raw: list[Any]) -> list[Any]:
        """A cursor's values as this walk's types (datetimes from their ISO text)."""
        try:
            if len(raw) != len(self.types):
                raise ValueError(raw)
            return list(_adapter(tuple(self.types)).validate_python(raw))
        except (ValueError, ValidationError):
            raise InvalidRequest(
                "the cursor does not fit this sort; pass the next_cursor of a page of the "
                "same sort, or page by offset"
            ) from None


@dataclass
class Cursor:
    """Where the next page starts: after the row with ``values`` (sort values, then id)
    in phase ``phase``; ``position`` rows come before it."""

    sort: str
    position: int
    phase: int = 0
    values: list[Any] = field(default_factory=list)

    def encode(self) -> str:
        values = [v.isoformat() if isinstance(v, datetime) else v for v in self.values]
        # NaN and the infinities (metric values) as JSON's constants; they read back.
        raw = json.dumps([self.sort, self.position, self.phase, values], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: str) -> Cursor:
        fix = "pass the next_cursor of a page of the same sort, or page by offset"
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            was, position, phase, values = json.loads(raw)
        except (ValueError, TypeError, binascii.Error):
            raise InvalidRequest(f"cursor {text!r} is not one this server made; {fix}") from None
        if was != sort:
            raise InvalidRequest(f"cursor {text!r} is for sort {was!r}, not {sort!r}; {fix}")
        if not (
            isinstance(position, int)
            and isinstance(phase, int)
            and isinstance(values, list)
            and 0 <= position <= INT64_MAX
        ):
            raise InvalidRequest(f"cursor {text!r} is not one this server made; {fix}")
        return cls(sort, position, phase, values)


# The trigram index reads three characters at a time: a shorter search scans the names.
SEARCH_MIN = 3
_search = table("run_search", column("rowid"))


def name_contains(q: str, dialect: str) -> Any:
    """Runs whose name holds ``q``, ignoring case, by the name's trigram index (migration
    0008) where the database has one that can answer."""
    if dialect == "sqlite" and len(q) >= SEARCH_MIN:
        # An FTS5 phrase of the trigram tokenizer matches wherever the text occurs.
        phrase = '"' + q.replace('"', '""') + '"'
        matching = select(_search.c.rowid).where(literal_column("run_search").op("MATCH")(phrase))
        return Run.id.in_(matching)
    # PostgreSQL's pg_trgm GIN index answers ILIKE itself. % and _ are the user's text.
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Run.name.ilike(f"%{escaped}%", escape="\\")


def conditions(query: ListRunsQuery, dialect: str) -> list[Any]:
    """The filters of a listing, on the runs table alone (a project by its id)."""
    where: list[Any] = []
    if query.project is not None:
        where.append(
            Run.project_id
            == select(Project.id).where(Project.name == query.project).scalar_subquery()
        )
    if query.status:
        where.append(Run.status.in_([s.value for s in query.status]))
    if query.user is not None:
        where.append(Run.user == query.user)
    if query.kind is not None:
        where.append(Run.kind == query.kind.value)
    if query.parent_id is not None:
        where.append(Run.parent_id == query.parent_id)
    if query.key is not None:
        where.append(Run.key == query.key)
    if query.q:
        where.append(name_contains(query.q, dialect))
    return where


def phases(stmt: Any, field_name: str) -> list[Phase] | None:
    """The index walks of a sort, in order; None for a field runs cannot be sorted by."""
    if field_name.startswith("metrics."):
        key = field_name[len("metrics.") :]
        summary = aliased(MetricSummary)
        has = stmt.join(
            summary,
            (summary.run_id == Run.id) & (summary.key == key) & summary.value.is_not(None),
        )
        lacking = stmt.where(
            ~select(MetricSummary.run_id)
            .where(
                MetricSummary.run_id == Run.id,
                MetricSummary.key == key,
                MetricSummary.value.is_not(None),
            )
            .exists()
        )
        return [
            Phase(has, [summary.value, summary.run_id], [Number, Id]),
            Phase(lacking, [Run.id], [Id]),
        ]
    if field_name.startswith("params."):
        key = field_name[len("params.") :]
        # Numbers by value, then every other value by its JSON text, then runs without it.
        number, other = aliased(Param), aliased(Param)
        numbers = stmt.join(
            number,
            (number.run_id == Run.id) & (number.key == key) & number.value_num.is_not(None),
        )
        others = stmt.join(
            other, (other.run_id == Run.id) & (other.key == key) & other.value_text.is_not(None)
        )
        lacking = stmt.where(
            ~select(Param.run_id).where(Param.run_id == Run.id, Param.key == key).exists()
        )
        return [
            Phase(numbers, [number.value_num, number.run_id], [float, Id]),
            Phase(others, [other.value_text, other.run_id], [str, Id]),
            Phase(lacking, [Run.id], [Id]),
        ]
    if field_name not in COLUMNS:
        return None
    column, kind, nullable = COLUMNS[field_name]
    if field_name == "id":
        return [Phase(stmt, [Run.id], [Id])]
    if not nullable:
        return [Phase(stmt, [column, Run.id], [kind, Id])]
    return [
        Phase(stmt.where(column.is_not(None)), [column, Run.id], [kind, Id]),
        Phase(stmt.where(column.is_(None)), [Run.id], [Id]),
    ]


def _after(phase: Phase, raw: list[Any], descending: bool) -> Any:
    """``phase``'s walk from just after the row whose sort values are ``raw``."""
    values = phase.values(raw)
    if len(values) == 1:
        key, value = phase.keys[0], values[0]
        return phase.stmt.where(key < value if descending else key > value)
    # A row value comparison: one range of the (value, id) index.
    keys, bound = tuple_(*phase.keys), tuple_(*values)
    return phase.stmt.where(keys < bound if descending else keys > bound)


def _ordered(stmt: Any, keys: list[Any], descending: bool) -> Any:
    return stmt.add_columns(*keys).order_by(*(k.desc() if descending else k.asc() for k in keys))


def page(
    session: Session,
    stmt: Any,
    sort: str,
    *,
    offset: int,
    limit: int,
    cursor: Cursor | None,
    width: int = 1,
) -> tuple[list[Any], Cursor | None, int]:
    """A page of runs, the cursor of the next page (None after the last) and the
    position of the page's first row. A run is the first ``width`` columns of a row of
    ``stmt``."""
    descending = sort.startswith("-")
    walks = phases(stmt, sort.lstrip("-+"))
    if walks is None:
        raise InvalidRequest(
            f"cannot sort by {sort!r}; use one of {', '.join(sorted(COLUMNS))}, "
            "params.NAME or metrics.NAME, with a leading '-' for descending"
        )
    if cursor is not None and cursor.phase >= len(walks):
        raise InvalidRequest(
            "the cursor does not fit this sort; pass the next_cursor of a page of the same "
            "sort, or page by offset"
        )
    start = cursor.position if cursor is not None else offset
    rows: list[Any] = []
    last_phase = 0
    for index, walk in enumerate(walks):
        if cursor is not None and index < cursor.phase:
            continue
        if cursor is not None and index == cursor.phase and cursor.values:
            query = _after(walk, cursor.values, descending)
        else:
            query = walk.stmt
        query = _ordered(query, walk.keys, descending)
        need = limit - len(rows)
        got = session.execute(query.offset(offset).limit(need)).all()
        if got:
            rows += got
            last_phase = index
            offset = 0
        elif offset:
            # This walk ends before the page starts: skip what it has.
            counted = select(func.count()).select_from(walk.stmt.subquery())
            offset = max(0, offset - (session.scalar(counted) or 0))
        if len(rows) == limit:
            break
    runs = [row[:width] if width > 1 else row[0] for row in rows]
    if len(rows) < limit:
        return runs, None, start
    return runs, Cursor(sort, start + len(rows), last_phase, list(rows[-1][width:])), start


# --- what a listed run shows ----------------------------------------------------------

# Values per run in the Runs panel's sparklines.
SPARK_POINTS = 30
# Runs whose sparklines one statement reads: a UNION ALL of that many index walks.
SPARK_BATCH = 20


@functools.cache
def _newest_points(runs: int) -> Any:
    """Each of ``runs`` runs' newest points of a metric (bound as run_0, run_1... and key),
    each a walk down the (run_id, key, step) index; one statement, compiled once."""
    return union_all(
        *(
            select(Metric.run_id, Metric.step, Metric.id, Metric.value)
            .where(Metric.run_id == bindparam(f"run_{i}"), Metric.key == bindparam("key"))
            .order_by(Metric.step.desc(), Metric.id.desc())
            .limit(bindparam("points"))
            .subquery()
            .select()
            for i in range(runs)
        )
    )


def _duration(started: datetime | None, ended: datetime | None) -> float | None:
    if started is None:
        return None
    return ((ended or utcnow()) - started).total_seconds()


# What a run's line in a listing shows: the rest (its environment, with every package, and
# a job's notebook) is read only for the run's own page.
SUMMARY_COLUMNS = (
    Run.id,
    Run.name,
    Run.kind,
    Run.status,
    Run.user,
    Run.queue,
    Run.requested_gpus,
    Run.worker,
    Run.attempt,
    Run.parent_id,
    Run.tags,
    Run.created_at,
    Run.started_at,
    Run.ended_at,
    Project.name.label("project"),
)
SUMMARY_NAMES = tuple(column.key for column in SUMMARY_COLUMNS)


def summary(values: Any) -> dict[str, Any]:
    """A run's summary fields from its row (or anything with the columns' names)."""
    return {
        **{name: values[name] for name in SUMMARY_NAMES},
        "tags": values["tags"] or [],
        "duration": _duration(values["started_at"], values["ended_at"]),
    }


def sparklines(
    session: Session, run_ids: list[int], key: str, points: int = SPARK_POINTS
) -> dict[int, list[float | None]]:
    """Each run's last ``points`` values of a metric, oldest first.

    One short walk down the (run_id, key, step) index per run: the cost is that of
    ``points`` rows a run, however many the run has (a window over every point of the
    page's runs took 0.38 s with 692k points stored). The walks go SPARK_BATCH to a
    statement: a statement per run cost 80 to 190 ms a page of 100 at 1,000,000 runs,
    five statements 15 to 40 ms. A short last batch repeats a run, so every statement
    has one shape, compiled once.
    """
    rows: list[Any] = []
    connection = session.connection()  # Core: none of the ORM's per-statement work
    for start in range(0, len(run_ids), SPARK_BATCH):
        batch = run_ids[start : start + SPARK_BATCH]
        batch += batch[-1:] * (SPARK_BATCH - len(batch))
        params = {f"run_{i}": run_id for i, run_id in enumerate(batch)}
        rows += connection.execute(
            _newest_points(SPARK_BATCH), {**params, "key": key, "points": points}
        ).all()
    out: dict[int, list[float | None]] = {}
    seen: set[tuple[int, int]] = set()
    # Oldest first; a repeated run's points come twice.
    for run_id, _step, point_id, value in sorted(rows, key=lambda row: row[:3]):
        if (run_id, point_id) not in seen:
            seen.add((run_id, point_id))
            out.setdefault(run_id, []).append(value)
    return out
