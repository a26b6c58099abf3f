"""Runs and their parts: params, metrics, logs, artifacts, datasets."""

from __future__ import annotations

import re
from typing import Any

from labrun.errors import InvalidRequest
from labrun.models import (
    AppendLogs,
    ArtifactList,
    CreateRun,
    DescribeArtifact,
    DescribeDatasetVersion,
    DescribeRun,
    LinkDataset,
    ListRunsQuery,
    LogMetrics,
    LogParams,
    LogTail,
    LogTailQuery,
    MetricsIngested,
    MetricsQuery,
    RunKind,
    RunList,
    RunMetrics,
    RunStatus,
    TransitionList,
    UpdateRun,
)

from ..store.artifacts import content_disposition
from .base import LabrunHandler, operation


class RunsHandler(LabrunHandler):
    @operation("List runs, filtered, sorted and paged", query=ListRunsQuery, response=RunList)
    async def get(self, query: ListRunsQuery) -> RunList:
        return await self.call(self.store.runs.list_runs, query)

    @operation(
        "Create a run (under a parent_id only if the caller may change the parent)",
        body=CreateRun,
        response=DescribeRun,
        status=201,
        run_field="parent_id",
        action="run.create",
    )
    async def post(self, body: CreateRun) -> DescribeRun:
        caller = self.caller
        if caller.scope == "run" and body.parent_id is None:
            # A job's kernel records a %%mlrun cell: it becomes a run under the job's run,
            # which the job's token may then change too.
            body = body.model_copy(update={"parent_id": caller.run_id})
        run = await self.call(self.store.runs.create, body, self.username)
        self.events.publish("run.created", run)
        return run


class RunHandler(LabrunHandler):
    @operation("Describe a run", response=DescribeRun)
    async def get(self, run_id: int) -> DescribeRun:
        return await self.call(self.store.runs.get, run_id)

    @operation(
        "Change a run's status, name, tags or environment",
        body=UpdateRun,
        response=DescribeRun,
        errors=(400, 403, 404, 409),
        action="run.update",
    )
    async def patch(self, run_id: int, body: UpdateRun) -> DescribeRun:
        if body.status == RunStatus.cancelled:
            return await cancel_run(self, run_id, body)
        run = await self.call(self.store.runs.update, run_id, body)
        self.events.publish("run.updated", run)
        if body.log:
            self.events.publish("run.log", {"run_id": run_id})
        return run


async def cancel_run(handler: LabrunHandler, run_id: int, change: UpdateRun | None) -> DescribeRun:
    """The one way a run is cancelled, by ``POST cancel`` or by ``PATCH`` to ``cancelled``:
    mark it (with ``change``'s other fields), then stop its job, or a sweep's unfinished
    runs, as soon as it became cancelled."""
    store = handler.store
    run, now_cancelled = await handler.call(store.runs.cancel, run_id, change)
    if now_cancelled:
        dispatcher = handler.app.dispatcher
        if run.kind == RunKind.sweep:
            children = await handler.call(store.sweeps.cancel_children, run_id)
            # All at once: one pass over the backlog for a sweep of thousands.
            await dispatcher.cancel(children)
            for child in children:
                handler.events.publish("run.updated", {"id": child})
        else:
            await dispatcher.cancel([run_id])
    handler.events.publish("run.updated", run)
    return run


class RunCancelHandler(LabrunHandler):
    @operation(
        "Cancel a queued or running run (a sweep: all its unfinished runs); a running job's "
        "kernel is interrupted, then killed",
        response=DescribeRun,
        errors=(403, 404, 409),
        action="run.cancel",
    )
    async def post(self, run_id: int) -> DescribeRun:
        return await cancel_run(self, run_id, None)


class RunTransitionsHandler(LabrunHandler):
    @operation("Every status a run passed through, with times", response=TransitionList)
    async def get(self, run_id: int) -> TransitionList:
        return TransitionList(transitions=await self.call(self.store.runs.transitions, run_id))


class RunParamsHandler(LabrunHandler):
    @operation("A run's parameters")
    async def get(self, run_id: int) -> dict[str, Any]:
        return await self.call(self.store.runs.params, run_id)

    @operation(
        "Record parameters (merged into those already recorded)",
        body=LogParams,
        action="run.log_params",
    )
    async def post(self, run_id: int, body: LogParams) -> dict[str, Any]:
        params = await self.call(self.store.runs.log_params, run_id, body.params)
        self.events.publish("run.params", {"run_id": run_id, "params": params})
        return params


class RunMetricsHandler(LabrunHandler):
    @operation(
        "Query a run's metric series (downsampled unless max_points=all)",
        query=MetricsQuery,
        response=RunMetrics,
        large_response=True,
    )
    async def get(self, run_id: int, query: MetricsQuery) -> RunMetrics:
        return await self.call(self.store.metrics.query, run_id, query)

    @operation(
        "Ingest a batch of metric points",
        body=LogMetrics,
        response=MetricsIngested,
        action="run.log_metrics",
    )
    async def post(self, run_id: int, body: LogMetrics) -> MetricsIngested:
        result = await self.call(self.store.metrics.ingest, run_id, body)
        if result.accepted and self.events.subscribers:
            self.events.publish("run.metrics", {"run_id": run_id, "points": result.accepted})
        return result


class RunLogsHandler(LabrunHandler):
    @operation("Tail a run's log after an offset", query=LogTailQuery, response=LogTail)
    async def get(self, run_id: int, query: LogTailQuery) -> LogTail:
        return await self.call(self.store.logs.tail, run_id, query)

    @operation(
        "Append to a run's log",
        body=AppendLogs,
        response=LogTail,
        status=201,
        action="run.append_log",
    )
    async def post(self, run_id: int, body: AppendLogs) -> LogTail:
        tail = await self.call(self.store.logs.append, run_id, body)
        self.events.publish("run.log", {"run_id": run_id, "next_offset": tail.next_offset})
        return tail


class RunArtifactsHandler(LabrunHandler):
    @operation("List a run's artifacts", response=ArtifactList)
    async def get(self, run_id: int) -> ArtifactList:
        return await self.call(self.store.artifacts.list_artifacts, run_id)


class RunArtifactHandler(LabrunHandler):
    @operation(
        "Download an artifact (with the content type it was stored with)",
        response_content="*/*",
    )
    async def get(self, run_id: int, artifact: str) -> None:
        meta, uri = await self.call(self.store.artifacts.locate, run_id, artifact)
        self.set_header("Content-Length", str(meta.size))
        self.set_header("ETag", f'"{meta.sha256}"')
        # Never rendered inline by the browser: an uploaded HTML file must not run here.
        self.set_header("Content-Disposition", content_disposition(artifact))
        await self.send_file(uri, meta.content_type)

    @operation(
        "Upload an artifact (the request body is the file)",
        response=DescribeArtifact,
        status=201,
        request_content="application/octet-stream",
        action="run.put_artifact",
    )
    async def put(self, run_id: int, artifact: str) -> DescribeArtifact:
        content_type = self.request.headers.get("Content-Type")
        if content_type in (None, "application/octet-stream", "application/x-www-form-urlencoded"):
            content_type = None
        elif len(content_type) > 128:
            raise InvalidRequest(
                f"Content-Type {content_type[:40]!r}... is longer than 128 characters"
            )
        kind = self.request.headers.get("X-Labrun-Artifact-Kind", "file")
        if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", kind) is None:
            raise InvalidRequest(
                f"X-Labrun-Artifact-Kind {kind[:40]!r} must be a word of up to 32 letters, "
                "digits, '_', '.' or '-' (file, notebook, ...)"
            )
        attempt = self.request.headers.get("X-Labrun-Attempt")
        if attempt is not None and re.fullmatch(r"[1-9][0-9]{0,8}", attempt) is None:
            raise InvalidRequest(
                f"X-Labrun-Attempt {attempt[:40]!r} must be the number of the run's attempt "
                "the file comes from (1, 2, ...), or left out"
            )
        meta = await self.call(
            self.store.artifacts.put,
            run_id,
            artifact,
            self.request.body,
            content_type=content_type,
            kind=kind,
            attempt=int(attempt) if attempt is not None else None,
        )
        self.events.publish(
            "run.artifact", {"run_id": run_id, "artifact": meta.model_dump(mode="json")}
        )
        return meta


class RunDatasetsHandler(LabrunHandler):
    @operation("The dataset versions a run used or produced")
    async def get(self, run_id: int) -> list[dict[str, Any]]:
        rows = await self.call(self.store.datasets.of_run, run_id)
        return [{"role": role, **v.model_dump(mode="json")} for role, v in rows]

    @operation(
        "Record that a run used (or produced) a dataset version",
        body=LinkDataset,
        response=DescribeDatasetVersion,
        status=201,
        action="run.link_dataset",
    )
    async def post(self, run_id: int, body: LinkDataset) -> DescribeDatasetVersion:
        return await self.call(self.store.datasets.link, run_id, body)
