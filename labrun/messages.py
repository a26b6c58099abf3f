"""What crosses between labrun's processes other than the REST API: one model for each.

The REST API's bodies are in :mod:`labrun.models`. These are the messages between a kernel, the
server's dispatcher and a worker, which travel through Dask (pickled, or msgpack for events):
a cell sent by ``%%mlrun`` (:class:`CellPayload`), a job the dispatcher hands a worker
(:class:`JobSpec`), how a run went wrong (:class:`RunError`, also what a run records in its
``error``), and how a cell's outcome maps to a run's status (:func:`outcome_status`).
"""

from __future__ import annotations

import traceback as tb
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labrun.models import RunStatus


class Message(BaseModel):
    """Base of the messages: a field nobody declared is a bug on the sending side."""

    model_config = ConfigDict(extra="forbid")


class RunError(Message):
    """Why a run failed, as it is recorded in the run's ``error`` and shown to the user.

    ``type`` and ``message`` are always there; an exception raised by the user's code also
    carries IPython's ``ename``/``evalue``/``traceback``, and a notebook cell its position.
    """

    type: str = Field(description="what went wrong: the exception's name, or labrun's word")
    message: str = Field(description="one line for the user")
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] | None = None
    cell_index: int | None = None
    exec_count: int | None = None
    emodule: str | None = Field(
        None, description="the exception type's module: the kernel raises the same type"
    )
    differences: list[str] | None = Field(
        None, description="a strict re-run's package differences from its original's record"
    )

    @classmethod
    def of(cls, err: BaseException, *, with_traceback: bool = False) -> RunError:
        """An exception labrun caught around the user's code (not raised by it)."""
        lines = tb.format_exception(err) if with_traceback else None
        return cls(
            type=type(err).__name__,
            message=str(err),
            traceback=[line.rstrip("\n") for line in lines] if lines else None,
        )

    @classmethod
    def raised(
        cls,
        ename: str,
        evalue: str,
        traceback: list[str] | None = None,
        *,
        cell_index: int | None = None,
        exec_count: int | None = None,
        emodule: str | None = None,
    ) -> RunError:
        """The user's code raised ``ename: evalue`` (in cell ``cell_index`` of a notebook)."""
        where = f"cell {cell_index} raised " if cell_index is not None else ""
        return cls(
            type=ename,
            message=f"{where}{ename}: {evalue}",
            ename=ename,
            evalue=evalue,
            traceback=traceback,
            cell_index=cell_index,
            exec_count=exec_count,
            emodule=emodule,
        )

    def record(self) -> dict[str, Any]:
        """The JSON a run stores (fields that are not set are left out; the module is only
        for the kernel)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"emodule"})


class CellOutcome(StrEnum):
    """How a cell ended on its worker, as the task's result says it."""

    ok = "ok"
    error = "error"
    cancelled = "cancelled"
    lost = "lost"


_STATUS_OF_OUTCOME = {
    CellOutcome.ok: RunStatus.completed,
    CellOutcome.error: RunStatus.failed,
    CellOutcome.cancelled: RunStatus.cancelled,
    CellOutcome.lost: RunStatus.failed,
}


def outcome_status(outcome: CellOutcome | str) -> RunStatus:
    """The run status a cell's outcome records (the one place this mapping is written)."""
    return _STATUS_OF_OUTCOME[CellOutcome(outcome)]


class CellPayload(Message):
    """One ``%%mlrun`` cell as a worker receives it (the inputs travel beside it, packed)."""

    token: str = Field(description="names the cell to the worker: for stop_cell and outcomes")
    key: str = Field(description="the run's key, by which the worker's reporter finds the run")
    topic: str | None = Field(None, description="the kernel's Dask event topic; None: no kernel")
    source: str
    returns: list[str] = Field(default_factory=list, description="names sent back")
    explicit: bool = Field(False, description="returns were named (--out): missing ones fail")
    cuda: bool = Field(False, description="the kernel can take CUDA tensors back")
    gpus: int = 0
    store_outputs: bool = Field(False, description="keep the returned values as outputs.pkl")


class RerunOf(Message):
    """A re-run's job names its original, so the worker can compare packages with it."""

    of: int
    strict: bool = False


class JobSpec(Message):
    """What the dispatcher hands a worker for one attempt of a job (notebook or cell re-run)."""

    run_id: int
    kind: Literal["notebook", "cell"]
    attempt: int
    gpus: int = 0
    project: str = "default"
    source: str | None = Field(None, description="a cell job's source")
    cell: dict[str, Any] | None = Field(None, description="a cell job's returns and inputs")
    notebook: str | None = None
    content: dict[str, Any] | None = Field(None, description="a notebook job's notebook")
    cwd: str | None = None
    timeout: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] | None = None
    token: str | None = Field(None, description="a notebook job's run-scoped token")
    token_id: str | None = Field(
        None, description="the id of that token, revoked once the attempt ends"
    )
    rerun: RerunOf | None = None
