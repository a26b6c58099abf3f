"""Bad input gets a 4xx with a JSON message that says what was wrong, never a 500; and
what HTTP itself promises (405 with Allow, HEAD, 404 as JSON) holds on every route."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote

import pytest
from support.api import Api, Mint, bearer

BIG = 2**63


def strict_json(body: bytes) -> Any:
    """JSON as a browser's JSON.parse reads it: no NaN or Infinity constants."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"the response has the non-JSON constant {constant}")

    return json.loads(body, parse_constant=refuse)


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "fragment"),
    [
        ("GET", "runs", None, {"offset": str(BIG)}, "query.offset"),
        ("GET", "runs/1/metrics", None, {"step_min": str(BIG)}, "query.step_min"),
        ("GET", "compare", None, {"runs": str(BIG)}, "query.runs.0"),
        ("POST", "runs/1/metrics", {"rows": [["loss", 1.0, BIG, None]]}, None, "body.rows.0.2"),
        ("POST", "queues", {"name": "big", "priority": 2**31}, None, "body.priority"),
        ("PUT", "workers/w1", {"nthreads": BIG}, None, "body.nthreads"),
        ("POST", "runs", {"parent_id": BIG}, None, "body.parent_id"),
    ],
)
async def test_integers_beyond_the_store_are_400s_naming_the_field(
    api: Api, mint: Mint, method: str, path: str, body: Any, params: dict | None, fragment: str
) -> None:
    await api("POST", "runs", body={}, status=201)
    # (a worker's heartbeat is the pool's to send)
    headers = bearer(mint("server", scope="pool")) if path.startswith("workers/") else None
    error = await api(method, path, body=body, params=params, status=400, headers=headers)
    assert fragment in error["message"] and error["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "%%%"}, "is not one this server made"),
        ({"cursor": "{next}", "sort": "user"}, "is for sort 'name', not 'user'"),
        ({"cursor": "{next}", "sort": "name", "offset": "2"}, "leave offset out"),
    ],
    ids=["garbled", "another sort", "with an offset"],
)
async def test_a_cursor_the_server_did_not_make_is_a_400(
    api: Api, params: dict[str, str], message: str
) -> None:
    for _ in range(3):
        await api("POST", "runs", body={}, status=201)
    page = await api("GET", "runs", params={"sort": "name", "limit": "2"})
    following = await api("GET", "runs", params={"sort": "name", "cursor": page["next_cursor"]})
    assert following["offset"] == 2 and len(following["runs"]) == 1
    assert following["next_cursor"] is None
    params = {k: page["next_cursor"] if v == "{next}" else v for k, v in params.items()}
    error = await api("GET", "runs", params=params, status=400)
    assert message in error["message"] and error["code"] == "invalid_request"


@pytest.mark.parametrize(
    "path", [f"runs/{BIG}", "runs/-1", f"reports/{BIG}/html", f"sweeps/{2**64}"]
)
async def test_ids_no_row_can_have_are_404s(api: Api, path: str) -> None:
    error = await api("GET", path, status=404)
    assert error["message"].startswith("no "), error


async def test_an_integer_parameter_beyond_any_float_is_no_error(api: Api) -> None:
    run = await api("POST", "runs", body={"params": {"seed": 10**400}}, status=201)
    assert list(run["params"]) == ["seed"]
    await api("GET", "runs", params={"sort": "params.seed"})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"rows": [["loss", 1.0, 3, NaN]]}', "rows.1.3 (the point 'loss' at step 3): "),
        (b'{"rows": [["loss", "nan", 3, null]]}', "rows.1.1 (the point 'loss' at step 3): "),
        (b'{"rows": [["loss", "nan", 3, null]]}', "not the string 'nan'"),
        (b'{"points": [{"key": "acc", "value": "1.5", "step": 2}]}', "the point 'acc' at step 2"),
        (b'{"points": [{"key": "acc", "value": 1, "time": Infinity}]}', "finite number"),
    ],
)
async def test_a_bad_metric_point_refuses_its_batch_naming_the_point(
    api: Api, raw: bytes, fragment: str
) -> None:
    # Given a batch whose first row is good and whose last is not
    run = await api("POST", "runs", body={}, status=201)
    batch = json.loads(raw)
    batch.setdefault("rows", []).insert(0, ["loss", 0.5, 0, None])
    body = json.dumps(batch).encode()  # NaN and Infinity stay the JSON constants

    # Then the batch is refused whole, with a message that names the point and why
    error = await api("POST", f"runs/{run['id']}/metrics", raw=body, status=400)
    assert fragment in error["message"], error["message"]
    assert (await api("GET", f"runs/{run['id']}/metrics"))["series"] == []


async def test_nan_and_infinity_are_kept_and_written_as_strings(api: Api, jp_fetch: Any) -> None:
    # Given a loss that diverged and then became NaN, sent as Python's json.dumps writes it
    run = await api("POST", "runs", body={}, status=201)
    rows = [["loss", 0.5, 0, 1.0], ["loss", math.inf, 1, 2.0], ["loss", -math.inf, 2, 3.0]]
    rows.append(["loss", math.nan, 3, 4.0])
    raw = json.dumps({"rows": rows}).encode()
    assert b"NaN" in raw
    await api("POST", f"runs/{run['id']}/metrics", raw=raw)

    # Then every read returns them, as strings that JSON.parse reads
    series = await api("GET", f"runs/{run['id']}/metrics", params={"max_points": "all"})
    assert series["series"][0]["values"] == [0.5, "Infinity", "-Infinity", "NaN"]
    described = await api("GET", f"runs/{run['id']}")
    assert described["metrics"] == {"loss": "NaN"}
    listing = await api("GET", "runs", params={"spark": "loss", "sort": "-metrics.loss"})
    assert listing["sparklines"][str(run["id"])] == [0.5, "Infinity", "-Infinity", "NaN"]
    compared = await api("GET", "compare", params={"runs": str(run["id"])})
    assert compared["metrics"][0]["values"] == ["NaN"]
    for path, params in [
        (f"runs/{run['id']}", {}),
        ("runs", {"spark": "loss"}),
        (f"runs/{run['id']}/metrics", {}),
        ("compare", {"runs": str(run["id"])}),
    ]:
        response = await jp_fetch("labrun", "api", "v1", *path.split("/"), params=params)
        assert "NaN" in json.dumps(strict_json(response.body))
    # And the OpenAPI document says so
    schemas = (await api("GET", "openapi.json"))["components"]["schemas"]
    values = schemas["MetricSeries"]["properties"]["values"]["items"]["anyOf"]
    assert {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]} in values


async def test_gpu_samples_of_an_unknown_worker_or_run_are_404s(api: Api, mint: Mint) -> None:
    pool = bearer(mint("server", scope="pool"))
    sample = {"worker_id": "ghost", "gpu_index": 0, "time": 1.0}
    error = await api("POST", "gpus/samples", body={"gpus": [sample]}, status=404, headers=pool)
    assert "no worker 'ghost'" in error["message"]
    await api("PUT", "workers/w1", body={}, headers=pool)
    sample = {**sample, "worker_id": "w1", "run_id": 999}
    error = await api("POST", "gpus/samples", body={"gpus": [sample]}, status=404, headers=pool)
    assert "no run with id 999" in error["message"]


@pytest.mark.parametrize("name", ["bad\nname.txt", "bad\rname", "nul\x00.bin", "c1\x85.txt"])
async def test_artifact_names_with_control_characters_are_refused(api: Api, name: str) -> None:
    run = await api("POST", "runs", body={}, status=201)
    error = await api("PUT", f"runs/{run['id']}/artifacts/{name}", raw=b"x", status=400)
    assert "control character" in error["message"]


async def test_an_artifacts_attempt_must_be_a_number_and_one_that_was_dispatched(
    api: Api,
) -> None:
    run = await api("POST", "runs", body={}, status=201)
    path = f"runs/{run['id']}/artifacts/model.pt"
    error = await api("PUT", path, raw=b"x", headers={"X-Labrun-Attempt": "two"}, status=400)
    assert error["message"].startswith("X-Labrun-Attempt 'two' must be the number of the run's")
    # A script's run was never dispatched: no worker's attempt speaks for it.
    error = await api("PUT", path, raw=b"x", headers={"X-Labrun-Attempt": "1"}, status=409)
    assert "the file 'model.pt' of attempt 1 is not kept" in error["message"]


async def test_a_unicode_artifact_name_downloads_under_that_name(api: Api) -> None:
    run = await api("POST", "runs", body={}, status=201)
    name = 'plots/Verlust "über" 模型.png'
    await api("PUT", f"runs/{run['id']}/artifacts/{name}", raw=b"\x89PNG", status=201)
    download = await api("GET", f"runs/{run['id']}/artifacts/{name}")
    assert download.body == b"\x89PNG"
    disposition = download.headers["Content-Disposition"]
    # RFC 6266: an ASCII stand-in, and the name itself in UTF-8
    assert disposition.startswith('attachment; filename="Verlust _uber_ .png"; ')
    assert unquote(disposition.split("filename*=utf-8''")[1]) == 'Verlust "über" 模型.png'


@pytest.mark.parametrize("path", ["nope", "runs/abc", "runs/1/nope", "datasets/x/versions/v1/more"])
async def test_paths_that_match_no_route_are_json_404s(api: Api, path: str) -> None:
    error = await api("GET", path, status=404)
    assert error["code"] == "not_found" and "no API route GET" in error["message"]


async def test_a_post_to_no_route_points_to_the_openapi_document(api: Api) -> None:
    error = await api("POST", "nope/deeper", body={}, status=404)
    assert "openapi.json lists the routes" in error["message"]


async def test_methods_a_route_does_not_take_are_405s_with_allow(api: Api) -> None:
    response = await api("DELETE", "runs", status=405)
    assert "takes GET, HEAD, POST, OPTIONS" in response["message"]
    raw = await api("PATCH", "tokens", body={}, status=405, headers={"Accept": "*/*"})
    assert raw["code"] == "method_not_allowed"
    options = await api("OPTIONS", "runs/1")
    assert options.headers["Allow"] == "GET, HEAD, PATCH, OPTIONS"


async def test_head_answers_every_get_route_without_a_body(api: Api) -> None:
    run = await api("POST", "runs", body={}, status=201)
    await api("PUT", f"runs/{run['id']}/artifacts/model.pt", raw=b"weights", status=201)
    listing = await api("HEAD", "runs")
    assert listing.body == b"" and listing.headers["Content-Type"] == "application/json"
    download = await api("HEAD", f"runs/{run['id']}/artifacts/model.pt")
    assert download.body == b"" and download.headers["Content-Length"] == "7"
    await api("HEAD", "runs/999", status=404)
    await api("HEAD", "jobs", status=405)  # POST only


async def test_the_event_stream_without_a_websocket_is_a_json_400(api: Api) -> None:
    error = await api("GET", "events", status=400)
    assert "WebSocket" in error["message"]


async def test_a_body_over_the_limit_is_a_413_that_says_what_to_do(
    api: Api, jp_serverapp: Any
) -> None:
    run = await api("POST", "runs", body={}, status=201)
    labrun = jp_serverapp.web_app.settings["labrun"]
    labrun.max_body_size = 10_000
    rows = [["loss", float(i), i, None] for i in range(1000)]
    error = await api("POST", f"runs/{run['id']}/metrics", body={"rows": rows}, status=413)
    assert "more than this server takes (10,000 bytes, c.LabRun.max_body_size)" in error["message"]
    assert error["message"].endswith("; send the points in smaller batches")
    assert error["code"] == "too_large"
    # A body under the limit is stored (parsed on a thread: it is over 64 KiB)
    labrun.max_body_size = 1_000_000
    stored = await api("POST", f"runs/{run['id']}/metrics", body={"rows": rows * 20})
    assert stored["accepted"] == 20_000
