"""The Dask tasks of the cells and of stopping runs: what the kernel and the server submit.

Dask pickles these functions by reference, so the kernel imports this module (lazily, where
it submits) and the server's dispatcher too; it imports nothing heavy at import time beyond
the cell runner itself (papermill is for notebook jobs, :mod:`.runner`).

``labrun rerun`` of a cell run comes back as a job from the dispatcher (:func:`run_cell_job`):
the same source and the inputs the kernel stored, with no kernel listening, so the log goes
to the run as it is written and the values the cell assigns are kept as ``outputs.pkl``.
"""

from __future__ import annotations

import threading
from typing import Any

import cloudpickle

from labrun.delivery import is_abandoned
from labrun.errors import Conflict, NotFound
from labrun.messages import CellPayload, JobSpec, RunError, outcome_status
from labrun.models import ClaimRun, LogEntryIn, RunStatus, UpdateRun
from labrun.shipping import Packed

from .execution import CellExecution, execute
from .plugins import CellRuns, Devices, Kernels, ServerLink
from .reporting import RunReporter
from .reruns import check_rerun
from .shell import Namespace

# Seconds a rerun waits for its record to reach the server before its task ends.
RECORD_TIMEOUT = 60.0


def run_cell(payload: CellPayload, inputs: dict[str, Packed]) -> dict[str, Any]:
    """The Dask task of a one-off ``%%mlrun`` cell."""
    link, devices, cells = ServerLink.of(), Devices.of(), CellRuns.of()
    reporter = RunReporter(link, payload.key)
    holder = f"cell:{payload.key}"
    held = devices.allocate(holder, payload.gpus)
    cells.cells[holder] = reporter
    try:
        return execute(payload, inputs, Namespace(), held, reporter)
    finally:
        cells.cells.pop(holder, None)
        devices.release(holder)


def run_cell_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of a cell re-run from the server: claim, run, record. How it ended.

    ``spec`` is a :class:`~labrun.messages.JobSpec` as JSON (a worker of another labrun
    version fails here, clearly).
    """
    job = JobSpec.model_validate(spec)
    link, devices, cells = ServerLink.of(), Devices.of(), CellRuns.of()
    client = link.client
    run_id = job.run_id
    cell = job.cell or {}
    key = f"rerun-{run_id}-{job.attempt}"
    held = devices.allocate(run_id, job.gpus)
    try:
        machine = devices.job_environment(held)
        try:
            link.claim(
                run_id,
                ClaimRun(attempt=job.attempt, worker=link.id, devices=held, environment=machine),
            )
        except (Conflict, NotFound) as err:
            return {"run_id": run_id, "status": "superseded", "error": RunError.of(err).record()}
        lines, error = check_rerun(client, job, machine["packages"])
        if lines:
            client.append_logs(
                run_id,
                [LogEntryIn(stream="system", text=f"{line}\n") for line in lines],
                attempt=job.attempt,
            )
        if error is not None:
            failed = UpdateRun(status=RunStatus.failed, error=error.record(), attempt=job.attempt)
            client.update_run(run_id, failed)
            return {"run_id": run_id, "status": "failed", "error": error.record()}
        reporter = RunReporter(link, key, run_id, job.attempt)
        reporter.start_reported = True  # the claim recorded it
        cells.cells[f"cell:{key}"] = reporter
        try:
            inputs: dict[str, Packed] = {}
            if cell.get("inputs"):
                stored = client.download_artifact(run_id, "inputs.pkl")
                inputs = cloudpickle.loads(stored)["values"]
            payload = CellPayload(
                token=key,
                key=key,
                topic=None,
                source=job.source or "",
                returns=cell.get("returns") or [],
                store_outputs=True,
            )
            result = execute(payload, inputs, Namespace(), held, reporter)
            if is_abandoned(run_id, job.attempt):
                # Its worker fenced itself (.fencing): nothing of it is sent.
                return {"run_id": run_id, "status": "abandoned", "error": None}
            # The task ends when the run's record is on the server, as a notebook job's does
            # (or, with the server away, when it waits in the worker's spool).
            reporter.outbox.flush(RECORD_TIMEOUT)
        finally:
            cells.cells.pop(f"cell:{key}", None)
        ended: RunError | None = result.get("error")
        return {
            "run_id": run_id,
            "status": outcome_status(result["status"]).value,
            "error": ended.record() if ended is not None else None,
        }
    finally:
        devices.release(run_id)


def cell_outcomes(keys: list[str], *, dask_worker: Any) -> dict[str, dict[str, Any]]:
    """Run on every worker by the server (``client.run``): how the cells ``keys`` ended here,
    for those whose kernel was waiting for them and went away before recording it."""
    return CellRuns.of(dask_worker).outcomes.find(keys)


def stop_cell(token: str, reason: str = "interrupted", *, dask_worker: Any = None) -> bool:
    """Run on every worker by the kernel (``client.run``): stop the cell ``token`` if it is here."""
    execution = CellExecution.running.get(token)
    return execution.stop(reason) if execution is not None else False


def stop_run(
    run_id: int,
    reason: str = "cancelled by request",
    *,
    key: str | None = None,
    dask_worker: Any,
) -> bool:
    """Run on a worker by the server (``client.run``): stop ``run_id`` if it runs here.

    A ``%%mlrun`` cell is found by its run's ``key`` too: a cell learns its run's id only
    when it first reports (half a second in), and a cancel may come before that.
    """
    job = Kernels.of(dask_worker).jobs.get(run_id)
    if job is None:
        # A %%mlrun cell (or a session's cell) cancelled from the sidebar or the CLI.
        for cell in list(CellRuns.of(dask_worker).cells.values()):
            if cell.run_id == run_id or (key is not None and cell.key == key):
                return stop_cell(cell.key, reason)
        return False
    # Off the worker's event loop: stopping waits for the kernel.
    threading.Thread(target=job.cancel, args=(reason,), daemon=True).start()
    return True


def abandon_run(run_id: int, attempt: int, reason: str, *, dask_worker: Any) -> bool:
    """Run on a worker by the scheduler of record (``client.run``): give attempt ``attempt``
    of the notebook job ``run_id`` up here (its kernel killed, its records dropped), because
    the server is about to run it again elsewhere. True when it ran here."""
    job = Kernels.of(dask_worker).jobs.get(run_id)
    if job is None or job.attempt != attempt:
        return False
    job.abandon(reason)
    return True


def describe_worker(*, dask_worker: Any) -> dict[str, Any]:
    """This worker's devices, holders and jobs (``client.run`` from the server or tests)."""
    devices, cells = Devices.of(dask_worker), CellRuns.of(dask_worker)
    kernels = Kernels.of(dask_worker)
    return {
        "id": ServerLink.of(dask_worker).id,
        "devices": devices.indices,
        "holders": {i: cells.run_of(h) for i, h in devices.holders().items()},
        "cells": sorted(cells.cells),
        "jobs": sorted(kernels.jobs),
        "warm_kernels": kernels.pool.ready,
    }
