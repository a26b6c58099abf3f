"""The typed messages between processes (labrun.messages) and the REST API's models."""

from __future__ import annotations

import json
import math
import re

import pytest
from pydantic import ValidationError

from labrun.jupyter_ext.handlers.base import PATH_PARAMS
from labrun.jupyter_ext.routes import ROUTES
from labrun.messages import CellOutcome, JobSpec, RunError, outcome_status
from labrun.models import CreateRun, LogMetrics, MetricPoint, RunStatus


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ("ok", RunStatus.completed),
        ("error", RunStatus.failed),
        ("cancelled", RunStatus.cancelled),
        ("lost", RunStatus.failed),
    ],
)
def test_each_outcome_records_one_status(outcome: str, status: RunStatus) -> None:
    assert outcome_status(outcome) is status
    assert outcome_status(CellOutcome(outcome)) is status


def test_a_run_error_records_only_what_it_knows() -> None:
    assert RunError.of(ZeroDivisionError("division by zero")).record() == {
        "type": "ZeroDivisionError",
        "message": "division by zero",
    }
    raised = RunError.raised("ValueError", "bad", ["tb"], cell_index=2, exec_count=3).record()
    assert raised["message"] == "cell 2 raised ValueError: bad"
    assert raised["cell_index"] == 2 and raised["traceback"] == ["tb"]


def test_a_job_spec_crosses_as_json_and_refuses_unknown_fields() -> None:
    spec = JobSpec(run_id=1, kind="notebook", attempt=1, parameters={"lr": 0.1})
    assert JobSpec.model_validate(json.loads(json.dumps(spec.model_dump(mode="json")))) == spec
    with pytest.raises(ValidationError, match="extra"):
        JobSpec.model_validate({**spec.model_dump(mode="json"), "surprise": 1})


def test_the_client_writes_nan_metrics_as_json_constants_and_nan_elsewhere_as_null() -> None:
    # Metric values go as the constants the server reads; PostgreSQL's JSON has no NaN
    # for a parameter.
    batch = LogMetrics(
        rows=[("loss", math.nan, 0, None)],
        points=[MetricPoint(key="grad", value=-math.inf)],
    )
    assert json.loads(batch.model_dump_json()) == {
        "batch_id": None,
        "points": [{"key": "grad", "value": -math.inf, "step": 0, "time": None}],
        "rows": [["loss", pytest.approx(math.nan, nan_ok=True), 0, None]],
    }
    assert json.loads(CreateRun(params={"lr": math.nan}).model_dump_json())["params"] == {
        "lr": None
    }


def test_path_params_cover_every_route_placeholder() -> None:
    for path, _ in ROUTES:
        for name in re.findall(r"\{(\w+)\}", path):
            assert name in PATH_PARAMS
