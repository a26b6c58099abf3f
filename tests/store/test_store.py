"""The run store against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event
from support.notebooks import make_notebook

from labrun.errors import Conflict, InvalidRequest, NotFound
from labrun.jupyter_ext import auth
from labrun.jupyter_ext.store import Store
from labrun.jupyter_ext.store.tables import MetricSummary
from labrun.models import (
    AppendLogs,
    CreateDatasetVersion,
    CreateQueue,
    CreateRun,
    GpuInfo,
    GpuSampleIn,
    HostSampleIn,
    IngestSamples,
    LinkDataset,
    ListRunsQuery,
    ListTokensQuery,
    LogEntryIn,
    LogMetrics,
    LogTailQuery,
    MetricPoint,
    MetricsQuery,
    RegisterWorker,
    RunStatus,
    SubmitJob,
    UpdateRun,
)


def points(key: str, values: list[float], start: int = 0) -> list[MetricPoint]:
    return [MetricPoint(key=key, value=v, step=start + i) for i, v in enumerate(values)]


def test_create_and_get_run_keeps_params_and_timestamps(store: Store) -> None:
    run = store.runs.create(
        CreateRun(project="seg", name="baseline", params={"lr": 0.01, "arch": "unet"}), "alice"
    )
    again = store.runs.get(run.id)
    assert again.project == "seg"
    assert again.params == {"lr": 0.01, "arch": "unet"}
    assert again.status == RunStatus.running
    assert again.user == "alice"
    assert again.started_at is not None and again.started_at.tzinfo is not None


def test_missing_run_is_not_found_with_a_hint(store: Store) -> None:
    with pytest.raises(NotFound, match="no run with id 404; `labrun runs`"):
        store.runs.get(404)


def test_status_transitions_are_recorded_and_enforced(store: Store) -> None:
    run = store.runs.create(CreateRun(status="queued"), "alice")
    store.runs.update(run.id, UpdateRun(status=RunStatus.running))
    done = store.runs.update(run.id, UpdateRun(status=RunStatus.completed))
    assert done.ended_at is not None
    assert [t.status for t in store.runs.transitions(run.id)] == ["queued", "running", "completed"]
    with pytest.raises(Conflict, match="is completed and cannot become running"):
        store.runs.update(run.id, UpdateRun(status=RunStatus.running))
    with pytest.raises(Conflict, match="already completed"):
        store.runs.cancel(run.id)


def test_metrics_ingest_keeps_every_point_and_the_latest_by_step(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    store.metrics.ingest(run.id, LogMetrics(points=points("loss", [3.0, 2.0, 1.0])))
    # An older step arriving later does not replace the latest value.
    store.metrics.ingest(run.id, LogMetrics(points=[MetricPoint(key="loss", value=9.0, step=0)]))
    series = store.metrics.query(run.id, MetricsQuery()).series
    assert [(s.key, s.steps, s.values) for s in series] == [
        ("loss", [0, 0, 1, 2], [3.0, 9.0, 2.0, 1.0])
    ]
    assert store.runs.get(run.id).metrics == {"loss": 1.0}


def test_a_batch_sent_twice_is_stored_once(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    batch = LogMetrics(batch_id="b-1", points=points("acc", [0.1, 0.2]))
    assert store.metrics.ingest(run.id, batch).accepted == 2
    second = store.metrics.ingest(run.id, batch)
    assert second.duplicate and second.accepted == 0
    assert store.metrics.query(run.id, MetricsQuery()).series[0].values == [0.1, 0.2]


def test_metric_query_by_key_and_step_range_and_downsampled(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    values = [math.sin(i / 10) for i in range(1000)]
    values[500] = 50.0  # a spike that downsampling must keep
    store.metrics.ingest(
        run.id, LogMetrics(points=points("loss", values) + points("lr", [0.1] * 10))
    )
    ranged = store.metrics.query(run.id, MetricsQuery(keys=["loss"], step_min=10, step_max=19))
    assert [s.key for s in ranged.series] == ["loss"]
    assert ranged.series[0].steps == list(range(10, 20))
    small = store.metrics.query(run.id, MetricsQuery(keys=["loss"], max_points=50)).series[0]
    assert len(small.steps) <= 50
    assert small.steps[0] == 0 and small.steps[-1] == 999
    assert 50.0 in small.values


def test_nan_and_infinity_are_stored_and_read_back_as_such(store: Store) -> None:
    # Given a loss that became NaN, and a gradient norm that overflowed both ways
    run = store.runs.create(CreateRun(), "alice")
    store.metrics.ingest(
        run.id,
        LogMetrics(
            points=points("loss", [1.0, 0.5, math.nan])
            + points("grad", [math.inf, -math.inf])
            + [MetricPoint(key="gap", value=None)]
        ),
    )

    # Then every point reads back as it was logged
    series = {s.key: s.values for s in store.metrics.query(run.id, MetricsQuery()).series}
    assert series["loss"][:2] == [1.0, 0.5] and math.isnan(series["loss"][2])
    assert series["grad"] == [math.inf, -math.inf] and series["gap"] == [None]
    # And the latest value may be NaN, while the range ignores it
    latest = store.runs.get(run.id).metrics
    assert math.isnan(latest["loss"]) and latest["grad"] == -math.inf
    with store.db.session() as session:
        loss = session.get(MetricSummary, (run.id, "loss"))
        assert loss is not None and (loss.min, loss.max, loss.count) == (0.5, 1.0, 3)

    # And a NaN arriving in a later batch keeps the range too
    store.metrics.ingest(run.id, LogMetrics(points=points("loss", [math.nan, 0.25], start=3)))
    with store.db.session() as session:
        loss = session.get(MetricSummary, (run.id, "loss"))
        assert loss is not None and (loss.min, loss.max, loss.value) == (0.25, 1.0, 0.25)


def test_runs_sort_by_a_metric_with_nan_after_every_number(store: Store) -> None:
    ids = {}
    for name, loss in [("inf", math.inf), ("nan", math.nan), ("low", 0.1), ("high", 9.0)]:
        run = store.runs.create(CreateRun(name=name), "bob")
        store.metrics.ingest(run.id, LogMetrics(points=[MetricPoint(key="loss", value=loss)]))
        ids[name] = run.id
    none = store.runs.create(CreateRun(name="none"), "bob")

    # NaN sorts above every number (as PostgreSQL orders it); runs without the metric last
    ascending = store.runs.list_runs(ListRunsQuery(sort="metrics.loss"))
    assert [r.name for r in ascending.runs] == ["low", "high", "inf", "nan", "none"]
    descending = store.runs.list_runs(ListRunsQuery(sort="-metrics.loss"))
    assert [r.name for r in descending.runs] == ["nan", "inf", "high", "low", "none"]
    assert math.isnan(ascending.runs[3].metrics["loss"]) and none.id not in ids.values()
    sparks = store.runs.list_runs(ListRunsQuery(sort="id", spark="loss")).sparklines
    assert math.isnan(sparks[ids["nan"]][0]) and sparks[ids["inf"]] == [math.inf]


def test_downsampling_keeps_a_loss_that_became_nan(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    values = [1.0 / (i + 1) for i in range(1000)]
    values[700:] = [math.nan] * 300
    store.metrics.ingest(run.id, LogMetrics(points=points("loss", values)))
    small = store.metrics.query(run.id, MetricsQuery(max_points=50)).series[0]
    assert len(small.steps) <= 50 and small.steps[0] == 0 and small.steps[-1] == 999
    nan = [step for step, v in zip(small.steps, small.values, strict=True) if math.isnan(v)]
    assert 700 <= nan[0] < 730
    assert min(v for v in small.values if not math.isnan(v)) == values[699]


def test_metric_reads_are_downsampled_unless_every_point_is_asked_for(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    store.metrics.ingest(run.id, LogMetrics(points=points("loss", [float(i) for i in range(3000)])))
    default = store.metrics.query(run.id, MetricsQuery()).series[0]
    assert len(default.steps) <= 1000 and default.steps[-1] == 2999
    every = store.metrics.query(run.id, MetricsQuery(max_points="all")).series[0]
    assert every.steps == list(range(3000))


def test_sparklines_walk_the_index_and_sort_nothing(store: Store) -> None:
    """A sparkline costs the points it shows, however many its run has: SQLite's own plan
    of the query shows index searches and no sort of the points."""
    if store.db.dialect != "sqlite":
        pytest.skip("reads SQLite's query plan")
    ids = []
    for _ in range(3):
        run = store.runs.create(CreateRun(), "bob")
        store.metrics.ingest(run.id, LogMetrics(points=points("loss", [*map(float, range(100))])))
        ids.append(run.id)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM metrics" in statement:
            statements.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        sparks = store.runs.list_runs(ListRunsQuery(spark="loss")).sparklines
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    assert sparks == {run_id: [*map(float, range(70, 100))] for run_id in ids}
    plan = set()
    with store.db.engine.connect() as connection:
        for statement, parameters in statements:
            explained = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan |= {row[-1] for row in explained}
    # The rest of the plan is the UNION ALL that reads several runs' walks at once.
    assert {step for step in plan if "metrics" in step or "B-TREE" in step} == {
        "SEARCH metrics USING INDEX ix_metrics_run_key_step (run_id=? AND key=?)"
    }


def test_list_filters_sorts_by_param_and_metric_and_pages(store: Store) -> None:
    ids = {}
    for lr, loss, project in [
        (0.1, 0.5, "a"),
        (0.01, 0.2, "a"),
        (0.001, 0.9, "b"),
        (0.05, None, "a"),
    ]:
        run = store.runs.create(
            CreateRun(project=project, name=f"lr={lr}", params={"lr": lr}), "bob"
        )
        if loss is not None:
            store.metrics.ingest(run.id, LogMetrics(points=[MetricPoint(key="loss", value=loss)]))
        ids[lr] = run.id

    by_loss = store.runs.list_runs(ListRunsQuery(sort="metrics.loss"))
    # Runs without the metric sort last.
    assert [r.id for r in by_loss.runs] == [ids[0.01], ids[0.1], ids[0.001], ids[0.05]]
    by_lr = store.runs.list_runs(ListRunsQuery(sort="-params.lr"))
    assert [r.params["lr"] for r in by_lr.runs] == [0.1, 0.05, 0.01, 0.001]
    project_a = store.runs.list_runs(ListRunsQuery(project="a", sort="name"))
    assert project_a.total == 3 and {r.project for r in project_a.runs} == {"a"}
    page = store.runs.list_runs(ListRunsQuery(sort="id", offset=1, limit=2))
    assert [r.id for r in page.runs] == sorted(ids.values())[1:3] and page.total == 4
    assert store.runs.list_runs(ListRunsQuery(q="=0.0")).total == 3
    with pytest.raises(ValidationError, match="cannot sort by 'colour'"):
        store.runs.list_runs(ListRunsQuery(sort="colour"))


def test_compare_flags_differences(store: Store) -> None:
    a = store.runs.create(CreateRun(params={"lr": 0.1, "seed": 1}), "bob")
    b = store.runs.create(CreateRun(params={"lr": 0.2, "seed": 1}), "bob")
    rows = {row.key: row for row in store.runs.compare([a.id, b.id]).params}
    assert rows["lr"].differs and rows["lr"].values == [0.1, 0.2]
    assert not rows["seed"].differs


def test_artifacts_are_content_addressed_and_replaced_by_name(store: Store) -> None:
    a = store.runs.create(CreateRun(), "bob")
    b = store.runs.create(CreateRun(), "bob")
    first = store.artifacts.put(a.id, "model.pt", b"weights", content_type=None)
    store.artifacts.put(b.id, "copy/model.pt", b"weights", content_type=None)
    # One stored file for both; where it lies is the server's alone to know.
    assert (
        store.artifacts.locate(a.id, "model.pt")[1]
        == store.artifacts.locate(b.id, "copy/model.pt")[1]
    )
    assert "uri" not in first.model_dump()
    assert first.content_type == "application/octet-stream"
    replaced = store.artifacts.put(a.id, "model.pt", b"better weights", content_type=None)
    assert replaced.sha256 != first.sha256
    assert [x.name for x in store.artifacts.list_artifacts(a.id).artifacts] == ["model.pt"]
    _, uri = store.artifacts.locate(a.id, "model.pt")
    assert b"".join(store.artifacts.read_chunks(uri)) == b"better weights"
    for bad in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(InvalidRequest, match="must be a relative path"):
            store.artifacts.put(a.id, bad, b"x", content_type=None)


def test_dataset_versions_follow_content(store: Store) -> None:
    run = store.runs.create(CreateRun(), "bob")
    v1 = store.datasets.add_version(
        "frames", CreateDatasetVersion(content_hash="aaaaaaaa1", size=10, file_count=2)
    )
    same = store.datasets.add_version(
        "frames", CreateDatasetVersion(content_hash="aaaaaaaa1", size=10, file_count=2)
    )
    v2 = store.datasets.add_version(
        "frames", CreateDatasetVersion(content_hash="bbbbbbbb2", size=12, file_count=3)
    )
    assert (v1.version, v1.created) == ("v1", True)
    assert (same.version, same.created) == ("v1", False)
    assert v2.version == "v2"
    with pytest.raises(Conflict, match="is version v1, not v2"):
        store.datasets.add_version(
            "frames",
            CreateDatasetVersion(content_hash="aaaaaaaa1", size=10, file_count=2, version="v2"),
        )
    store.datasets.link(run.id, LinkDataset(dataset="frames", version="v2"))
    assert store.datasets.get_version("frames", "v2").runs == [run.id]
    with pytest.raises(NotFound, match="has no version 'v9'"):
        store.datasets.get_version("frames", "v9")


def test_queues_count_their_runs(store: Store) -> None:
    store.pool.create_queue(CreateQueue(name="gpu-long", priority=5))
    store.runs.create(CreateRun(status="queued", queue="gpu-long"), "bob")
    queues = {q.name: q for q in store.pool.list_queues().queues}
    assert set(queues) == {"default", "gpu-long"}
    assert queues["gpu-long"].queued == 1
    with pytest.raises(Conflict):
        store.pool.create_queue(CreateQueue(name="gpu-long"))
    with pytest.raises(NotFound, match="no queue named 'nope'"):
        store.runs.create(CreateRun(queue="nope"), "bob")


def test_gpus_show_latest_sample_and_holder(store: Store) -> None:
    run = store.runs.create(CreateRun(), "carol")
    store.pool.heartbeat(
        "w1",
        RegisterWorker(host="gpu01", gpus=[GpuInfo(index=0, name="Fake GPU"), GpuInfo(index=1)]),
    )
    store.pool.ingest_samples(
        IngestSamples(
            gpus=[
                GpuSampleIn(worker_id="w1", gpu_index=0, time=1.0, utilization=10, run_id=run.id),
                GpuSampleIn(worker_id="w1", gpu_index=0, time=2.0, utilization=90, run_id=run.id),
                GpuSampleIn(worker_id="w1", gpu_index=1, time=2.0, utilization=0),
            ]
        )
    )
    gpus = {g.index: g for g in store.pool.gpus().gpus}
    assert gpus[0].utilization == 90 and gpus[0].user == "carol" and not gpus[0].idle
    assert gpus[1].idle and gpus[1].user is None


def test_workers_carry_their_latest_cpu_and_memory_sample(store: Store) -> None:
    # Given two CPU-only workers, one of which has sent two host samples
    store.pool.heartbeat("w1", RegisterWorker(host="vm"))
    store.pool.heartbeat("w2", RegisterWorker(host="vm"))
    store.pool.ingest_samples(
        IngestSamples(
            hosts=[
                HostSampleIn(worker_id="w1", time=1.0, cpu_percent=5.0, ram_used=1, ram_total=8),
                HostSampleIn(worker_id="w1", time=2.0, cpu_percent=75.0, ram_used=3, ram_total=8),
            ]
        )
    )
    workers = {w.id: w for w in store.pool.list_workers().workers}
    # Then the worker list shows the newest sample, and none for the silent worker
    telemetry = workers["w1"].telemetry
    assert telemetry is not None
    assert (telemetry.time, telemetry.cpu_percent, telemetry.ram_used, telemetry.ram_total) == (
        2.0,
        75.0,
        3,
        8,
    )
    assert workers["w2"].telemetry is None


@pytest.mark.parametrize("descending", [False, True])
def test_metric_sort_pages_through_runs_without_the_metric(store: Store, descending: bool) -> None:
    # Given 7 runs with a loss (some tied) and 5 without
    with_loss, without = [], []
    for i, loss in enumerate([0.5, 0.1, 0.3, 0.1, 0.9, 0.7, 0.3]):
        run = store.runs.create(CreateRun(name=f"with-{i}"), "bob")
        store.metrics.ingest(run.id, LogMetrics(points=[MetricPoint(key="loss", value=loss)]))
        with_loss.append((loss, run.id))
    for i in range(5):
        run = store.runs.create(CreateRun(name=f"without-{i}"), "bob")
        store.metrics.ingest(run.id, LogMetrics(points=[MetricPoint(key="acc", value=1.0)]))
        without.append(run.id)

    # When paging through them 5 at a time, sorted by loss
    sort = "-metrics.loss" if descending else "metrics.loss"
    seen = []
    for offset in range(0, 15, 5):
        page = store.runs.list_runs(ListRunsQuery(sort=sort, offset=offset, limit=5))
        assert page.total == 12
        seen += [r.id for r in page.runs]

    # Then every run appears once: by loss (ties by id), then the rest by id
    ranked = sorted(with_loss, reverse=descending)
    assert seen == [run_id for _, run_id in ranked] + sorted(without, reverse=descending)


def test_sort_by_duration_orders_finished_runs_then_the_others_by_id(store: Store) -> None:
    # Given finished runs of 10 s and 1000 s, and one running for an hour
    now = datetime.now(timezone.utc)
    ids = {}
    for name, seconds, status in [
        ("short", 10, RunStatus.completed),
        ("long", 1000, RunStatus.completed),
        ("running", 3600, RunStatus.running),
    ]:
        run = store.runs.create(CreateRun(name=name, status=RunStatus.queued), "alice")
        store.runs.update(
            run.id, UpdateRun(status=status, started_at=now - timedelta(seconds=seconds))
        )
        ids[name] = run.id
    never = store.runs.create(CreateRun(name="never", status=RunStatus.queued), "alice")

    # Then sorting by duration orders the finished ones by how long they took; the running
    # one (its duration still grows, so no index can hold it) and the one that never
    # started come after them, by id, as runs without a value do in every sort
    longest = store.runs.list_runs(ListRunsQuery(sort="-duration"))
    assert [r.name for r in longest.runs] == ["long", "short", "never", "running"]
    assert longest.runs[-1].duration is not None and longest.runs[-1].duration >= 3600
    shortest = store.runs.list_runs(ListRunsQuery(sort="duration"))
    assert [r.id for r in shortest.runs] == [ids["short"], ids["long"], ids["running"], never.id]


def test_tokens_are_recorded_and_revocations_read_back(store: Store) -> None:
    run = store.runs.create(CreateRun(), "alice")
    kept = store.tokens.issue(user="alice", name="ci", scope="user", lifetime=600)
    gone = store.tokens.issue(user="alice", name="job", scope="run", lifetime=600, run_id=run.id)
    stale = store.tokens.issue(user="bob", name="old", scope="user", lifetime=-1)
    claims = auth.verify(store.tokens.secret, gone.token)
    assert claims is not None and auth.caller_of(claims) == auth.Caller(
        user="alice",
        scope="run",
        run_id=run.id,
        token_id=gone.id,
        name="job",
        issued=float(int(gone.created_at.timestamp())),
        expires=float(int(gone.expires_at.timestamp())),
    )
    before = datetime.now(timezone.utc)
    store.tokens.revoke(gone.id, by="alice", admin=False)
    store.tokens.revoke_ids([stale.id], by="labrun")
    # Revoked tokens that have not expired, with their expiry; none since a later moment
    assert store.tokens.revoked_since(None) == {gone.id: gone.expires_at.timestamp()}
    assert set(store.tokens.revoked_since(before - timedelta(seconds=5))) == {gone.id}
    assert store.tokens.revoked_since(datetime.now(timezone.utc) + timedelta(hours=1)) == {}
    assert [t.id for t in store.tokens.list_tokens(ListTokensQuery(), "alice").tokens] == [kept.id]
    every = store.tokens.list_tokens(ListTokensQuery(all=True), None).tokens
    assert {t.id: t.status for t in every} == {
        kept.id: "active",
        gone.id: "revoked",
        stale.id: "revoked",
    }
    with pytest.raises(NotFound, match="no run with id 999"):
        store.tokens.issue(user="alice", name="x", scope="run", lifetime=60, run_id=999)


def test_a_dispatched_notebook_job_gets_a_token_of_its_own_run(store: Store) -> None:
    # The store's first token: its secret is made on the way, outside the dispatch's write
    job = SubmitJob(notebook="a.ipynb", content=make_notebook("y = x", parameters="x = 0"))
    run = store.jobs.submit(job, "alice")
    (spec,) = store.dispatch.next_attempts([run.id], 600)
    claims = auth.verify(store.tokens.secret, spec.token)
    caller = auth.caller_of(claims) if claims else None
    assert caller is not None and (caller.user, caller.scope, caller.run_id) == (
        "alice",
        "run",
        run.id,
    )
    assert spec.token_id == caller.token_id
    assert caller.expires == pytest.approx(caller.issued + 600, abs=1)


def test_a_nul_character_is_kept_by_sqlite_and_a_clear_400_on_postgresql(store: Store) -> None:
    async def create(**fields: Any) -> Any:
        return await store.db.run(store.runs.create, CreateRun(**fields), "alice")

    if store.db.dialect == "postgresql":
        with pytest.raises(InvalidRequest, match=r"NUL character .*remove it"):
            asyncio.run(create(name="a\x00b"))
    else:
        assert asyncio.run(create(name="a\x00b")).name == "a\x00b"
    # A log line keeps what the program printed, its NUL replaced, in either store
    run = asyncio.run(create(name="printed"))
    store.logs.append(run.id, AppendLogs(entries=[LogEntryIn(text="a\x00b\n")]))
    tail = store.logs.tail(run.id, LogTailQuery())
    assert [entry.text for entry in tail.entries] == ["a\ufffdb\n"]
