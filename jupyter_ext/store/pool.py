"""Queues, workers (with heartbeats) and GPU/host telemetry samples."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from labrun.errors import Conflict, NotFound
from labrun.models import (
    CreateQueue,
    DescribeGpu,
    DescribeQueue,
    DescribeWorker,
    GpuHistory,
    GpuHistoryQuery,
    GpuList,
    GpuSampleIn,
    HostTelemetry,
    IngestSamples,
    QueueList,
    RegisterWorker,
    RunStatus,
    WorkerList,
)

from .database import Database
from .tables import GpuSample, HostSample, Queue, Run, Worker, utcnow


class PoolStore:
    def __init__(self, db: Database, *, worker_timeout: float = 30.0) -> None:
        self.db = db
        self.worker_timeout = worker_timeout

    # --- queues ------------------------------------------------------------------

    def list_queues(self) -> QueueList:
        with self.db.session() as session:
            counts: dict[tuple[str | None, str], int] = {
                (queue, status): n
                for queue, status, n in session.execute(
                    select(Run.queue, Run.status, func.count())
                    .where(
                        Run.queue.is_not(None),
                        Run.status.in_([RunStatus.queued.value, RunStatus.running.value]),
                    )
                    .group_by(Run.queue, Run.status)
                )
            }
            queues = session.scalars(select(Queue).order_by(Queue.priority.desc(), Queue.name))
            return QueueList(
                queues=[
                    DescribeQueue(
                        name=q.name,
                        priority=q.priority,
                        max_gpus_per_user=q.max_gpus_per_user,
                        description=q.description,
                        queued=counts.get((q.name, "queued"), 0),
                        running=counts.get((q.name, "running"), 0),
                    )
                    for q in queues
                ]
            )

    def get_queue(self, name: str) -> DescribeQueue:
        for queue in self.list_queues().queues:
            if queue.name == name:
                return queue
        raise NotFound(f"no queue named {name!r}; `labrun queues` lists them")

    def create_queue(self, req: CreateQueue) -> DescribeQueue:
        try:
            with self.db.session() as session:
                if session.get(Queue, req.name) is not None:
                    raise Conflict(f"a queue named {req.name!r} already exists")
                session.add(
                    Queue(
                        name=req.name,
                        priority=req.priority,
                        max_gpus_per_user=req.max_gpus_per_user,
                        description=req.description,
                    )
                )
        except IntegrityError as err:
            raise Conflict(f"a queue named {req.name!r} already exists") from err
        return self.get_queue(req.name)

    # --- workers -----------------------------------------------------------------

    def _describe_worker(self, w: Worker) -> DescribeWorker:
        alive = w.status == "running" and utcnow() - w.last_heartbeat < timedelta(
            seconds=self.worker_timeout
        )
        return DescribeWorker(
            id=w.id,
            host=w.host,
            address=w.address,
            resources=w.resources or {},
            gpus=w.gpus or [],
            status=w.status,
            alive=alive,
            started_at=w.started_at,
            last_heartbeat=w.last_heartbeat,
            runs=w.runs or [],
            nthreads=w.nthreads,
        )

    def heartbeat(self, worker_id: str, req: RegisterWorker) -> tuple[DescribeWorker, bool]:
        """Register a worker or record its heartbeat; True when it is new."""
        with self.db.session() as session:
            worker = session.get(Worker, worker_id)
            created = worker is None
            if worker is None:
                worker = Worker(id=worker_id)
                session.add(worker)
            worker.host = req.host
            worker.address = req.address
            worker.resources = req.resources
            worker.gpus = [g.model_dump() for g in req.gpus]
            worker.status = req.status
            worker.runs = req.runs
            worker.nthreads = req.nthreads
            worker.last_heartbeat = utcnow()
            session.flush()
            return self._describe_worker(worker), created

    def list_workers(self) -> WorkerList:
        """Every worker, each with its latest host sample (CPU and memory)."""
        with self.db.session() as session:
            rows = session.scalars(select(Worker).order_by(Worker.id)).all()
            latest = (
                select(HostSample.worker_id, func.max(HostSample.time).label("time"))
                .group_by(HostSample.worker_id)
                .subquery()
            )
            telemetry = {
                s.worker_id: HostTelemetry(
                    time=s.time,
                    cpu_percent=s.cpu_percent,
                    ram_used=s.ram_used,
                    ram_total=s.ram_total,
                )
                for s in session.scalars(
                    select(HostSample).join(
                        latest,
                        (HostSample.worker_id == latest.c.worker_id)
                        & (HostSample.time == latest.c.time),
                    )
                )
            }
            workers = [self._describe_worker(w) for w in rows]
        for worker in workers:
            worker.telemetry = telemetry.get(worker.id)
        return WorkerList(workers=workers)

    def get_worker(self, worker_id: str) -> DescribeWorker:
        with self.db.session() as session:
            worker = session.get(Worker, worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}; `labrun pool` lists the workers")
            return self._describe_worker(worker)

    # --- telemetry ---------------------------------------------------------------

    def ingest_samples(self, req: IngestSamples) -> int:
        """Store telemetry of registered workers (about the runs that exist)."""
        with self.db.session() as session:
            workers = {s.worker_id for s in req.gpus} | {s.worker_id for s in req.hosts}
            known = set(session.scalars(select(Worker.id).where(Worker.id.in_(workers))))
            if unknown := sorted(workers - known):
                raise NotFound(
                    f"no worker {unknown[0]!r}; a worker registers (PUT workers/{{id}}) "
                    "before it sends samples"
                )
            runs = {s.run_id for s in req.gpus if s.run_id is not None}
            found = set(session.scalars(select(Run.id).where(Run.id.in_(runs))))
            if missing := sorted(runs - found):
                raise NotFound(
                    f"no run with id {missing[0]} (in a GPU sample of worker "
                    f"{next(s.worker_id for s in req.gpus if s.run_id == missing[0])!r})"
                )
            connection = session.connection()
            if req.gpus:
                connection.execute(insert(GpuSample), [s.model_dump() for s in req.gpus])
            if req.hosts:
                connection.execute(insert(HostSample), [s.model_dump() for s in req.hosts])
        return len(req.gpus) + len(req.hosts)

    def gpus(self) -> GpuList:
        """Every GPU of every live worker, with its latest sample and who holds it."""
        with self.db.session() as session:
            workers = [
                self._describe_worker(w)
                for w in session.scalars(select(Worker).order_by(Worker.id)).all()
            ]
            latest = (
                select(
                    GpuSample.worker_id,
                    GpuSample.gpu_index,
                    func.max(GpuSample.time).label("time"),
                )
                .group_by(GpuSample.worker_id, GpuSample.gpu_index)
                .subquery()
            )
            samples = {
                (s.worker_id, s.gpu_index): s
                for s in session.scalars(
                    select(GpuSample).join(
                        latest,
                        (GpuSample.worker_id == latest.c.worker_id)
                        & (GpuSample.gpu_index == latest.c.gpu_index)
                        & (GpuSample.time == latest.c.time),
                    )
                )
            }
            run_ids = {s.run_id for s in samples.values() if s.run_id is not None}
            # A sample can be a couple of seconds old: a holder whose run has ended since
            # does not hold the GPU any more.
            users: dict[int, str] = {
                run_id: user
                for run_id, user in session.execute(
                    select(Run.id, Run.user).where(
                        Run.id.in_(run_ids), Run.status == RunStatus.running.value
                    )
                )
            }
        out = []
        for worker in workers:
            if not worker.alive:
                continue
            for gpu in worker.gpus:
                s = samples.get((worker.id, gpu["index"]))
                run_id = s.run_id if s and s.run_id in users else None
                out.append(
                    DescribeGpu(
                        worker_id=worker.id,
                        index=gpu["index"],
                        name=gpu.get("name", ""),
                        time=s.time if s else None,
                        utilization=s.utilization if s else None,
                        memory_used=s.memory_used if s else None,
                        memory_total=(s.memory_total if s else None) or gpu.get("memory_total"),
                        temperature=s.temperature if s else None,
                        power=s.power if s else None,
                        run_id=run_id,
                        user=users.get(run_id) if run_id else None,
                        idle=run_id is None,
                    )
                )
        return GpuList(gpus=out)

    def gpu_history(self, query: GpuHistoryQuery) -> GpuHistory:
        with self.db.session() as session:
            stmt = select(GpuSample)
            if query.worker_id is not None:
                stmt = stmt.where(GpuSample.worker_id == query.worker_id)
            if query.gpu_index is not None:
                stmt = stmt.where(GpuSample.gpu_index == query.gpu_index)
            if query.run_id is not None:
                stmt = stmt.where(GpuSample.run_id == query.run_id)
            if query.since is not None:
                stmt = stmt.where(GpuSample.time >= query.since)
            if query.until is not None:
                stmt = stmt.where(GpuSample.time <= query.until)
            rows = session.scalars(stmt.order_by(GpuSample.time, GpuSample.id)).all()
            samples = [
                GpuSampleIn(
                    worker_id=s.worker_id,
                    gpu_index=s.gpu_index,
                    time=s.time,
                    utilization=s.utilization,
                    memory_used=s.memory_used,
                    memory_total=s.memory_total,
                    temperature=s.temperature,
                    power=s.power,
                    run_id=s.run_id,
                )
                for s in rows
            ]
        if len(samples) > query.max_points:
            # Even spacing keeps the shape of a utilization curve well enough for a chart.
            stride = len(samples) / query.max_points
            samples = [samples[int(i * stride)] for i in range(query.max_points)]
        return GpuHistory(samples=samples)
