"""Re-runs: a recorded notebook job or ``%%mlrun`` cell, queued again as a new job.

The new run keeps what describes the code (notebook, git state, local modules; a cell's
source and stored inputs), its parameters and dataset versions. What describes the machine
(packages, Python, GPUs) it records anew where it runs. Its job names the original, so the
worker compares its packages with the original's record before running anything, and with
``strict`` refuses to run on a difference.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labrun.environment import code_only
from labrun.errors import InvalidRequest
from labrun.models import CreateRun, RunKind, RunStatus

from .runs import RunStore
from .tables import Artifact, Run, RunDataset


def rerun_spec(original: Run, strict: bool) -> dict[str, Any]:
    """What a re-run's job says of its original: a reference, not the package list (the
    worker reads the record itself, so the spec that crosses to it stays small)."""
    if strict and not (original.environment or {}).get("packages"):
        raise InvalidRequest(
            f"run {original.id} recorded no packages (it ran before labrun recorded them), so "
            "a strict re-run has nothing to compare them with; re-run it without --strict"
        )
    return {"of": original.id, "strict": strict}


def rerun_notebook(runs: RunStore, session: Session, original: Run, user: str, strict: bool) -> Run:
    """A notebook job again: the same notebook, parameters, GPUs and datasets."""
    run_id = original.id
    params = runs.params_of(session, [run_id])[run_id]
    job = original.job or {}
    run = runs.insert(
        session,
        CreateRun(
            project=original.project.name,
            name=f"{original.name or 'run'} (rerun of {run_id})",
            kind=RunKind.notebook,
            status=RunStatus.queued,
            params=params,
            tags=original.tags or [],
            queue=original.queue or "default",
            requested_gpus=original.requested_gpus,
            notebook=original.notebook,
            environment={**code_only(original.environment or {}), "rerun_of": run_id},
        ),
        user,
    )
    run.priority = original.priority
    run.job = {
        **job,
        "parameters": job.get("parameters", params),
        "rerun": rerun_spec(original, strict),
    }
    copy_datasets(session, original, run)
    return run


def rerun_cell(runs: RunStore, session: Session, original: Run, user: str, strict: bool) -> Run:
    """A cell run again as a job: its source, with the inputs the kernel stored."""
    run_id = original.id
    if not original.source:
        raise InvalidRequest(f"run {run_id} has no cell source to run again")
    parent = session.get(Run, original.parent_id) if original.parent_id else None
    if parent is not None and parent.kind == RunKind.session.value:
        raise InvalidRequest(
            f"run {run_id} ran in session {parent.name or parent.id}, whose namespace "
            "is not stored; re-run the session's cells in their notebook instead"
        )
    environment = dict(original.environment or {})
    inputs = session.scalar(
        select(Artifact).where(Artifact.run_id == run_id, Artifact.name == "inputs.pkl")
    )
    if environment.get("inputs") and inputs is None:
        raise InvalidRequest(
            f"run {run_id}'s inputs were not stored (larger than the kernel's "
            "LabrunMagics.max_input_artifact), so it cannot be re-run exactly; raise that "
            "limit and run the cell again in its notebook"
        )
    run = runs.insert(
        session,
        CreateRun(
            project=original.project.name,
            name=f"{original.name or 'cell'} (rerun of {run_id})",
            kind=RunKind.cell,
            status=RunStatus.queued,
            params=runs.params_of(session, [run_id])[run_id],
            tags=original.tags or [],
            queue=original.queue or "default",
            requested_gpus=original.requested_gpus,
            source=original.source,
            notebook=original.notebook,
            environment={**code_only(environment), "rerun_of": run_id},
        ),
        user,
    )
    run.priority = original.priority
    run.job = {
        "cell": {"returns": environment.get("outputs", []), "inputs": bool(inputs)},
        "rerun": rerun_spec(original, strict),
    }
    if inputs is not None:
        # The same stored blob: artifacts are content-addressed, nothing is copied.
        session.add(
            Artifact(
                run_id=run.id,
                name=inputs.name,
                uri=inputs.uri,
                size=inputs.size,
                sha256=inputs.sha256,
                content_type=inputs.content_type,
                kind=inputs.kind,
            )
        )
    copy_datasets(session, original, run)
    return run


def copy_datasets(session: Session, original: Run, run: Run) -> None:
    """The same dataset versions, recorded up front as the rerun's inputs."""
    for link in session.scalars(
        select(RunDataset).where(RunDataset.run_id == original.id, RunDataset.role == "input")
    ):
        session.add(RunDataset(run_id=run.id, dataset_version_id=link.dataset_version_id))
