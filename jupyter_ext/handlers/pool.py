"""Queues, workers and GPUs."""

from __future__ import annotations

from labrun.models import (
    CreateQueue,
    DescribeQueue,
    DescribeWorker,
    GpuHistory,
    GpuHistoryQuery,
    GpuList,
    IngestSamples,
    QueueList,
    RegisterWorker,
    WorkerList,
)

from .base import LabrunHandler, operation


class QueuesHandler(LabrunHandler):
    @operation("List queues with their queued and running counts", response=QueueList)
    async def get(self) -> QueueList:
        return await self.call(self.store.pool.list_queues)

    @operation(
        "Create a queue",
        body=CreateQueue,
        response=DescribeQueue,
        status=201,
        errors=(400, 403, 409),
        action="queue.create",
    )
    async def post(self, body: CreateQueue) -> DescribeQueue:
        queue = await self.call(self.store.pool.create_queue, body)
        self.events.publish("queue.created", queue)
        return queue


class QueueHandler(LabrunHandler):
    @operation("Describe a queue", response=DescribeQueue)
    async def get(self, name: str) -> DescribeQueue:
        return await self.call(self.store.pool.get_queue, name)


class WorkersHandler(LabrunHandler):
    @operation("List workers (alive: a heartbeat within the worker timeout)", response=WorkerList)
    async def get(self) -> WorkerList:
        return await self.call(self.store.pool.list_workers)


class WorkerHandler(LabrunHandler):
    @operation("Describe a worker", response=DescribeWorker)
    async def get(self, worker_id: str) -> DescribeWorker:
        return await self.call(self.store.pool.get_worker, worker_id)

    @operation(
        "Register a worker or record its heartbeat",
        body=RegisterWorker,
        response=DescribeWorker,
        access="pool",
        action="worker.heartbeat",
    )
    async def put(self, worker_id: str, body: RegisterWorker) -> DescribeWorker:
        worker, created = await self.call(self.store.pool.heartbeat, worker_id, body)
        if created or body.status != "running":
            self.events.publish("worker.updated", worker)
        if body.abandoned:
            dispatcher = self.app.dispatcher
            lost = await self.call(
                self.store.dispatch.abandoned,
                worker_id,
                body.abandoned,
                max_attempts=dispatcher.settings.max_attempts,
            )
            for run_id in lost:
                self.events.publish("run.updated", {"id": run_id})
                dispatcher.add(await self.call(self.store.dispatch.queued, run_id))
        return worker


class GpusHandler(LabrunHandler):
    @operation("Every GPU of every live worker: latest sample and holder", response=GpuList)
    async def get(self) -> GpuList:
        return await self.call(self.store.pool.gpus)


class GpuHistoryHandler(LabrunHandler):
    @operation("GPU samples over time", query=GpuHistoryQuery, response=GpuHistory)
    async def get(self, query: GpuHistoryQuery) -> GpuHistory:
        return await self.call(self.store.pool.gpu_history, query)


class SamplesHandler(LabrunHandler):
    @operation(
        "Ingest GPU and host telemetry samples of registered workers",
        body=IngestSamples,
        status=201,
        access="pool",
        action="worker.samples",
    )
    async def post(self, body: IngestSamples) -> dict[str, int]:
        stored = await self.call(self.store.pool.ingest_samples, body)
        if body.gpus and self.events.subscribers:
            self.events.publish("gpus.sampled", {"samples": stored})
        return {"stored": stored}
