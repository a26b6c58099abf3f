"""The REST API through a real Jupyter Server with authentication on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.api import Api, Mint, bearer
from support.notebooks import make_notebook

from labrun.models import ClaimRun, SubmitJob


async def test_run_lifecycle_over_rest(api: Api) -> None:
    # Given a new run with parameters
    run = await api(
        "POST", "runs", body={"project": "seg", "name": "unet", "params": {"lr": 0.1}}, status=201
    )
    assert run["user"] == "alice" and run["status"] == "running"
    run_id = str(run["id"])

    # When it logs metrics, params, log lines and an artifact, and completes
    ingested = await api(
        "POST",
        f"runs/{run_id}/metrics",
        body={
            "points": [
                {"key": "loss", "value": 0.5, "step": 1},
                {"key": "loss", "value": 0.25, "step": 2},
            ]
        },
    )
    assert ingested == {"accepted": 2, "duplicate": False}
    assert await api("POST", f"runs/{run_id}/params", body={"params": {"epochs": 3}}) == {
        "lr": 0.1,
        "epochs": 3,
    }
    tail = await api(
        "POST",
        f"runs/{run_id}/logs",
        body={"entries": [{"text": "epoch 1\n"}, {"stream": "stderr", "text": "warn\n"}]},
        status=201,
    )
    await api("PUT", f"runs/{run_id}/artifacts/plots/loss.png", raw=b"\x89PNG....", status=201)
    done = await api("PATCH", f"runs/{run_id}", body={"status": "completed"})

    # Then everything reads back
    assert done["status"] == "completed" and done["metrics"] == {"loss": 0.25}
    series = await api("GET", f"runs/{run_id}/metrics", params={"keys": "loss", "step_min": 2})
    assert series["series"] == [
        {"key": "loss", "steps": [2], "values": [0.25], "times": series["series"][0]["times"]}
    ]
    later = await api("GET", f"runs/{run_id}/logs", params={"offset": tail["entries"][0]["offset"]})
    assert [e["text"] for e in later["entries"]] == ["warn\n"]
    artifacts = await api("GET", f"runs/{run_id}/artifacts")
    assert [(a["name"], a["content_type"]) for a in artifacts["artifacts"]] == [
        ("plots/loss.png", "image/png")
    ]
    download = await api("GET", f"runs/{run_id}/artifacts/plots/loss.png")
    assert download.body == b"\x89PNG...." and download.headers["Content-Type"] == "image/png"
    listing = await api("GET", "runs", params={"project": "seg", "sort": "-metrics.loss"})
    assert [r["id"] for r in listing["runs"]] == [run["id"]]


async def test_cancel_and_conflicts(api: Api) -> None:
    run = await api("POST", "runs", body={"status": "queued"}, status=201)
    cancelled = await api("POST", f"runs/{run['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    again = await api("POST", f"runs/{run['id']}/cancel", status=409)
    assert again["code"] == "conflict" and "already cancelled" in again["message"]


async def test_datasets_queues_workers_gpus_compare(api: Api, mint: Mint) -> None:
    v1 = await api(
        "POST",
        "datasets/frames/versions",
        body={"content_hash": "0123456789", "size": 5, "file_count": 1},
        status=201,
    )
    same = await api(
        "POST",
        "datasets/frames/versions",
        body={"content_hash": "0123456789", "size": 5, "file_count": 1},
        status=200,
    )
    assert v1["version"] == same["version"] == "v1"
    assert [d["name"] for d in (await api("GET", "datasets"))["datasets"]] == ["frames"]

    await api("POST", "queues", body={"name": "long", "priority": 3}, status=201)
    dup = await api("POST", "queues", body={"name": "long"}, status=409)
    assert "already exists" in dup["message"]
    assert {q["name"] for q in (await api("GET", "queues"))["queues"]} == {"default", "long"}

    # A worker registers and reports with its pool's token (a user's is refused)
    pool = bearer(mint("server", scope="pool"))
    worker = {"host": "gpu01", "gpus": [{"index": 0, "name": "Fake GPU", "memory_total": 1024}]}
    refused = await api("PUT", "workers/w1", body=worker, status=403)
    assert "only the pool's workers" in refused["message"]
    await api("PUT", "workers/w1", body=worker, headers=pool)
    sample = {"worker_id": "w1", "gpu_index": 0, "time": 1.0, "utilization": 42}
    await api("POST", "gpus/samples", body={"gpus": [sample]}, status=403)
    await api("POST", "gpus/samples", body={"gpus": [sample]}, status=201, headers=pool)
    gpus = await api("GET", "gpus")
    assert [(g["worker_id"], g["utilization"], g["idle"]) for g in gpus["gpus"]] == [
        ("w1", 42, True)
    ]
    (worker,) = (await api("GET", "workers"))["workers"]
    assert worker["alive"] is True and worker["telemetry"] is None
    await api(
        "POST",
        "gpus/samples",
        body={"hosts": [{"worker_id": "w1", "time": 2.0, "cpu_percent": 12.5, "ram_total": 64}]},
        status=201,
        headers=pool,
    )
    (worker,) = (await api("GET", "workers"))["workers"]
    assert worker["telemetry"] == {
        "time": 2.0,
        "cpu_percent": 12.5,
        "ram_used": None,
        "ram_total": 64,
    }

    a = await api("POST", "runs", body={"params": {"lr": 1}}, status=201)
    b = await api("POST", "runs", body={"params": {"lr": 2}}, status=201)
    comparison = await api("GET", "compare", params={"runs": f"{a['id']},{b['id']}"})
    assert comparison["params"] == [{"key": "lr", "values": [1, 2], "differs": True}]


@pytest.mark.parametrize(
    ("method", "path", "params", "code", "fragment"),
    [
        ("GET", "runs/999", None, 404, "no run with id 999"),
        ("GET", "runs", {"sort": "shoe"}, 400, "cannot sort by 'shoe'"),
        ("GET", "runs", {"limit": "lots"}, 400, "query.limit"),
        ("GET", "runs", {"colour": "red"}, 400, "unknown query argument 'colour'"),
        ("GET", "datasets/none", None, 404, "no dataset named 'none'"),
        ("GET", "queues/none", None, 404, "no queue named 'none'"),
        ("GET", "runs/1/artifacts/missing.txt", None, 404, "no artifact named 'missing.txt'"),
    ],
)
async def test_errors_are_json_with_a_message(
    api: Api, method: str, path: str, params: dict | None, code: int, fragment: str
) -> None:
    await api("POST", "runs", body={}, status=201)
    error = await api(method, path, params=params, status=code)
    assert fragment in error["message"] and error["code"]


async def test_unknown_queue_on_create_is_404_naming_the_queue(api: Api) -> None:
    error = await api("POST", "runs", body={"queue": "gpu-huge"}, status=404)
    assert error["message"] == "no queue named 'gpu-huge'; `labrun queues` lists them"


async def test_metrics_in_compact_rows_form_and_empty_batches(api: Api) -> None:
    run = await api("POST", "runs", body={}, status=201)
    rows = [["loss", 0.5, 0, 1.0], ["loss", 0.4, 1, None], ["acc", None, 1, 2.0]]
    assert (await api("POST", f"runs/{run['id']}/metrics", body={"rows": rows}))["accepted"] == 3
    series = {s["key"]: s for s in (await api("GET", f"runs/{run['id']}/metrics"))["series"]}
    assert series["loss"]["values"] == [0.5, 0.4] and series["acc"]["values"] == [None]
    empty = await api("POST", f"runs/{run['id']}/metrics", body={"batch_id": "x"}, status=400)
    assert "needs 'points' or 'rows'" in empty["message"]
    bad = await api(
        "POST", f"runs/{run['id']}/metrics", body={"rows": [["", 1.0, 0, 0.0]]}, status=400
    )
    assert "body.rows.0.0" in bad["message"]


async def test_a_heartbeat_naming_an_attempt_its_worker_gave_up_loses_it(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    """A worker cut off from the server stops its jobs itself (executor/fencing.py); its next
    heartbeat says so, and a job the server still counted as running there is queued again."""
    store = jp_serverapp.web_app.settings["labrun"].store
    content = json.loads(json.dumps(make_notebook("print(1)")))
    run_id = store.jobs.submit(SubmitJob(notebook="t.ipynb", content=content), "alice").id
    (spec,) = store.dispatch.next_attempts([run_id], token_lifetime=3600)
    store.dispatch.claim(run_id, ClaimRun(attempt=spec.attempt, worker="w1"), max_attempts=3)
    gave_up = {"host": "h", "abandoned": [{"run_id": run_id, "attempt": 1}]}
    pool = bearer(mint("server", scope="pool"))
    # (a user cannot say so for a worker)
    await api("PUT", "workers/w1", body=gave_up, status=403)
    # another worker's word: nothing changes
    await api("PUT", "workers/w2", body=gave_up, headers=pool)
    assert (await api("GET", f"runs/{run_id}"))["status"] == "running"
    await api("PUT", "workers/w1", body=gave_up, headers=pool)
    run = await api("GET", f"runs/{run_id}")
    assert (run["status"], run["worker"]) == ("queued", None)
    moves = await api("GET", f"runs/{run_id}/transitions")
    assert [t["message"] for t in moves["transitions"]][-2:] == [
        "its worker w1 gave it up",
        "retry 2 of 3",
    ]
