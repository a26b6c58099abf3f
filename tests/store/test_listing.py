"""Listing runs: every sort pages the same by offset and by cursor, by index walks."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from labrun.errors import InvalidRequest
from labrun.jupyter_ext.store import Database, Store, check_schema
from labrun.jupyter_ext.store.database import make_engine, upgrade
from labrun.models import CreateRun, ListRunsQuery, LogMetrics, RunStatus, UpdateRun

COLUMNS = ["id", "created_at", "started_at", "ended_at", "name", "status", "user", "kind"]
SORTS = [
    *COLUMNS,
    "project",
    "queue",
    "duration",
    "params.lr",
    "params.opt",
    "params.mixed",
    "metrics.loss",
]


@pytest.fixture
def runs(store: Store) -> list[int]:
    """15 runs with ties, and without names, starts, ends, parameters or a loss."""
    now = datetime.now(timezone.utc)
    mixed: list[Any] = [3, "b", 1.5, None, [1], "a", True, 3, {"k": 1}, -2, "b", 0, "", 7, 2]
    losses = [0.5, 0.1, math.nan, None, 0.1, math.inf, 0.3, None, 0.5, -math.inf, 0.2, math.nan]
    ids = []
    for i in range(15):
        params: dict[str, Any] = {"mixed": mixed[i]}
        if i % 4:
            params["lr"] = [0.1, 0.01, 0.1][i % 3]
        if i % 5:
            params["opt"] = ["adam", "sgd", "adam", "lion"][i % 4]
        run = store.runs.create(
            CreateRun(
                project=f"p{i % 3}",
                name=None if i % 6 == 0 else f"run-{i % 4}",
                params=params,
                status=RunStatus.queued,
            ),
            f"user{i % 2}",
        )
        if i % 7:
            status = RunStatus.completed if i % 2 else RunStatus.running
            # A running run's duration grows while the test pages: 50 s from any finished
            # run's, so the two never swap places between pages.
            started = now - timedelta(seconds=100 * (i % 3) + (1 if i % 2 else 50))
            store.runs.update(run.id, UpdateRun(status=status, started_at=started))
        if i < len(losses) and losses[i] is not None:
            store.metrics.ingest(run.id, LogMetrics(rows=[("loss", losses[i], 0, None)]))
        ids.append(run.id)
    return ids


def listing(store: Store, **query: Any) -> Any:
    return store.runs.list_runs(ListRunsQuery(**query))


def walk(store: Store, sort: str, *, by_cursor: bool, limit: int = 4) -> list[int]:
    seen: list[int] = []
    query: dict[str, Any] = {"sort": sort, "limit": limit}
    while True:
        page = listing(store, **query)
        assert page.offset == len(seen) and page.total == 15
        seen += [run.id for run in page.runs]
        if by_cursor:
            if page.next_cursor is None:
                return seen
            query = {"sort": sort, "limit": limit, "cursor": page.next_cursor}
        else:
            if len(page.runs) < limit:
                return seen
            query = {"sort": sort, "limit": limit, "offset": len(seen)}


@pytest.mark.parametrize("direction", ["", "-"])
@pytest.mark.parametrize("field", SORTS)
def test_every_sort_pages_alike_by_offset_and_by_cursor(
    store: Store, runs: list[int], field: str, direction: str
) -> None:
    # Given runs where many values tie or are missing
    sort = direction + field
    whole = [run.id for run in listing(store, sort=sort, limit=100).runs]
    assert sorted(whole) == sorted(runs)

    # When paging through them 4 at a time, by offset and by cursor
    # Then both pages see every run once, in the order of the whole list
    assert walk(store, sort, by_cursor=False) == whole
    assert walk(store, sort, by_cursor=True) == whole


def test_a_parameter_sorts_numbers_then_other_values_by_their_json_then_runs_without(
    store: Store, runs: list[int]
) -> None:
    page = listing(store, sort="params.mixed", limit=100)
    values = [run.params.get("mixed", "<none>") for run in page.runs]
    # JSON text: '""' < '"a"' < '[1]' < 'null' < 'true' < '{"k": 1}'
    assert values == [-2, 0, 1.5, 2, 3, 3, 7, "", "a", "b", "b", [1], None, True, {"k": 1}]
    descending = listing(store, sort="-params.mixed", limit=100)
    assert [run.params.get("mixed") for run in descending.runs][:7] == [7, 3, 3, 2, 1.5, 0, -2]


def test_a_cursor_walk_neither_repeats_nor_skips_when_runs_arrive(
    store: Store, runs: list[int]
) -> None:
    # Given the first page of the newest runs
    first = listing(store, sort="-created_at", limit=5)
    # When new runs arrive before the next pages are asked for
    for _ in range(3):
        store.runs.create(CreateRun(name="late"), "bob")
    seen = [run.id for run in first.runs]
    cursor = first.next_cursor
    while cursor is not None:
        page = listing(store, sort="-created_at", limit=5, cursor=cursor)
        seen += [run.id for run in page.runs]
        cursor = page.next_cursor
    # Then the walk still sees each of the runs it started with once
    assert seen == sorted(runs, reverse=True)


def test_a_cursor_of_another_sort_or_made_up_or_with_an_offset_is_refused(
    store: Store, runs: list[int]
) -> None:
    cursor = listing(store, sort="metrics.loss", limit=2).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidRequest, match=r"is for sort 'metrics\.loss', not 'name'"):
        listing(store, sort="name", cursor=cursor)
    with pytest.raises(InvalidRequest, match="cursor 'abc' is not one this server made"):
        listing(store, sort="name", cursor="abc")
    with pytest.raises(InvalidRequest, match="offset 4 and a cursor were both given"):
        listing(store, sort="metrics.loss", cursor=cursor, offset=4)


@pytest.mark.parametrize(
    ("sort", "made_up"),
    [
        ("id", ["id", 0, 0, [2**70]]),
        ("created_at", ["created_at", 0, 0, [{"a": 1}, 3]]),
        ("created_at", ["created_at", 0, 0, ["yesterday", 3]]),
        ("params.lr", ["params.lr", 0, 7, [1]]),
        ("metrics.loss", ["metrics.loss", 0, 0, ["low", 3]]),
        ("name", ["name", 0, 0, ["a"]]),
    ],
)
def test_a_cursor_with_values_that_do_not_fit_its_sort_is_refused(
    store: Store, runs: list[int], sort: str, made_up: list[Any]
) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(made_up).encode()).decode()
    with pytest.raises(InvalidRequest, match="the cursor does not fit this sort"):
        listing(store, sort=sort, cursor=cursor)


def test_every_sort_walks_an_index_and_sorts_nothing(store: Store, runs: list[int]) -> None:
    """A page costs its rows, however many runs there are: SQLite's plan of every query of
    a first page and of a page by cursor has no sort step. (Filtered, the planner may
    rightly pick the filter's index and sort what it finds.)"""
    if store.db.dialect != "sqlite":
        pytest.skip("reads SQLite's query plan")
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY" in statement and "FROM runs" in statement:
            statements.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        for field in SORTS:
            for sort in (field, "-" + field):
                page = listing(store, sort=sort, limit=2)
                listing(store, sort=sort, limit=2, cursor=page.next_cursor)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    with store.db.engine.connect() as connection:
        for statement, parameters in statements:
            explained = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in explained]
            assert not [step for step in plan if "TEMP B-TREE" in step], (statement, plan)


def test_duration_sorts_finished_runs_by_how_long_they_took_then_the_others_by_id(
    store: Store, runs: list[int]
) -> None:
    page = listing(store, sort="-duration", limit=100)
    finished = [run for run in page.runs if run.ended_at is not None and run.started_at]
    assert [run.id for run in page.runs[: len(finished)]] == [run.id for run in finished]
    durations = [run.duration for run in finished]
    assert durations == sorted(durations, reverse=True) and len(set(durations)) > 1
    others = [run.id for run in page.runs[len(finished) :]]
    assert others == sorted(others, reverse=True) and len(others) == 15 - len(finished)


def test_a_run_queued_again_has_no_duration_until_it_ends_again(store: Store) -> None:
    run = store.runs.create(CreateRun(name="retried", status=RunStatus.running), "bob")
    store.runs.update(run.id, UpdateRun(status=RunStatus.lost))
    assert listing(store, sort="duration").runs[0].id == run.id
    store.runs.update(run.id, UpdateRun(status=RunStatus.queued))
    store.runs.update(run.id, UpdateRun(status=RunStatus.running))
    # Running again: among the runs without a duration, not with its first attempt's.
    other = store.runs.create(CreateRun(name="done", status=RunStatus.running), "bob")
    store.runs.update(other.id, UpdateRun(status=RunStatus.completed))
    assert [r.id for r in listing(store, sort="duration").runs] == [other.id, run.id]


NAMES = ["Alpha_1", "alphaX1", "beta%", "betaXX", 'say "hi"', "gamma", None, "ünïcode run"]


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("ALPHA", ["Alpha_1", "alphaX1"]),  # by the trigram index, ignoring case
        ("a_1", ["Alpha_1"]),  # _ is the user's character, not LIKE's any-one
        ("_", ["Alpha_1"]),  # shorter than a trigram: a scan, with the same rule
        ("%", ["beta%"]),
        ("ta%", ["beta%"]),
        ('"hi"', ['say "hi"']),  # quotes are text, not FTS syntax
        ("amm", ["gamma"]),
        ("code r", ["ünïcode run"]),
        ("zzz", []),
    ],
)
def test_searching_names_finds_the_text_as_typed(store: Store, q: str, found: list[str]) -> None:
    for name in NAMES:
        store.runs.create(CreateRun(name=name), "bob")
    page = listing(store, q=q, sort="name", limit=100)
    assert [run.name for run in page.runs] == sorted(found) and page.total == len(found)


def test_a_renamed_run_is_found_by_its_new_name_only(store: Store) -> None:
    run = store.runs.create(CreateRun(name="first-name"), "bob")
    store.runs.update(run.id, UpdateRun(name="second-name"))
    assert [r.id for r in listing(store, q="second").runs] == [run.id]
    assert listing(store, q="first").runs == []


def test_parameters_stored_before_the_listing_migration_sort_by_their_text(
    tmp_path: Path,
) -> None:
    # Given a store at schema 0006 with text parameters written by that labrun
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (id, name, created_at) VALUES (1, 'p', '2026-01-01 00:00:00')"
            )
        )
        for run_id, opt in [(1, "sgd"), (2, "adam"), (3, 0.5)]:
            conn.execute(
                text(
                    "INSERT INTO runs (id, project_id, kind, status, user, requested_gpus, "
                    "resources, attempt, tags, environment, priority, created_at, updated_at) "
                    "VALUES (:id, 1, 'script', 'completed', 'bob', 0, '{}', 0, '[]', '{}', 0, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"id": run_id},
            )
            number = opt if isinstance(opt, float) else None
            conn.execute(
                text(
                    "INSERT INTO params (run_id, key, value, value_num) VALUES (:r, 'opt', :v, :n)"
                ),
                {"r": run_id, "v": json.dumps(opt), "n": number},
            )
    engine.dispose()
    # When it is upgraded
    db = Database(url)
    check_schema(db.engine, auto_upgrade=True)
    store = Store(db, artifact_root=str(tmp_path / "artifacts"))
    # Then they sort as the new ones do
    page = store.runs.list_runs(ListRunsQuery(sort="params.opt"))
    assert [run.id for run in page.runs] == [3, 2, 1]
    db.close()


def test_sparklines_of_a_page_longer_than_a_batch_are_each_runs_newest_points(
    store: Store,
) -> None:
    # Given 45 runs (more than two batches of walks), some without the metric, some with
    # more points than a sparkline shows
    expected = {}
    for i in range(45):
        run = store.runs.create(CreateRun(), "bob")
        values = [float(i * 100 + step) for step in range(i % 4 * 12)]
        if values:
            rows = [("loss", value, step, None) for step, value in enumerate(values)]
            store.metrics.ingest(run.id, LogMetrics(rows=rows))
            expected[run.id] = values[-30:]
    # When one page lists them all with their sparklines
    page = listing(store, sort="id", limit=45, spark="loss")
    # Then each run with points has its newest 30, oldest first, and no other
    assert page.sparklines == expected


def test_runs_stored_before_the_search_migration_are_found_and_sort_by_duration(
    tmp_path: Path,
) -> None:
    # Given a store at schema 0007 with two finished runs written by that labrun
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (id, name, created_at) VALUES (1, 'p', '2026-01-01 00:00:00')"
            )
        )
        for run_id, name, seconds in [(1, "short-old-run", 5), (2, "long-old-run", 65)]:
            conn.execute(
                text(
                    "INSERT INTO runs (id, project_id, name, kind, status, user, requested_gpus, "
                    "resources, attempt, tags, environment, priority, created_at, started_at, "
                    "ended_at, updated_at) VALUES (:id, 1, :name, 'script', 'completed', 'bob', "
                    "0, '{}', 0, '[]', '{}', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00', "
                    ":ended, '2026-01-01 00:00:00')"
                ),
                {
                    "id": run_id,
                    "name": name,
                    "ended": f"2026-01-01 00:{seconds // 60:02d}:{seconds % 60:02d}.000000",
                },
            )
    engine.dispose()
    # When it is upgraded
    db = Database(url)
    check_schema(db.engine, auto_upgrade=True)
    store = Store(db, artifact_root=str(tmp_path / "artifacts"))
    # Then the search finds them and the duration sort orders them
    assert [run.id for run in listing(store, q="OLD-RUN", sort="id").runs] == [1, 2]
    page = listing(store, sort="-duration")
    assert [(run.id, run.duration) for run in page.runs] == [(2, 65.0), (1, 5.0)]
    db.close()
