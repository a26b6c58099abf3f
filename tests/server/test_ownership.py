"""A run is changed only by its owner, an admin, a token scoped to it, or the pool."""

from __future__ import annotations

import re
from typing import Any

from support.api import Api, Mint, bearer
from support.notebooks import make_notebook

from labrun.jupyter_ext.handlers.base import Operation
from labrun.jupyter_ext.routes import ROUTES
from labrun.models import CreateReport, CreateRun, CreateToken

METHODS = ("get", "post", "put", "patch", "delete")

# A valid body for each operation that names a run in its body (a run's parent, a
# report's run): the check reads the parsed body. {run} is the run walked.
BODIES: dict[type, dict[str, Any]] = {
    CreateRun: {"name": "child", "parent_id": "{run}"},
    CreateReport: {"name": "r", "notebook": "r.ipynb", "run_id": "{run}", "html_artifact": "a"},
    CreateToken: {"name": "mine-now", "run": "{run}"},
}


def run_changing_operations() -> list[tuple[str, str, Operation]]:
    """(path, METHOD, operation) of every operation that changes a run, read from the route
    table: every method but GET of a route with a run_id, and every operation that names
    a run in its body. A route added later is walked as well."""
    found = []
    for path, handler in ROUTES:
        for method in METHODS:
            op = getattr(getattr(handler, method, None), "__labrun_operation__", None)
            if op is None:
                continue
            if ("{run_id}" in path and method != "get") or op.run_field is not None:
                found.append((path, method.upper(), op))
    return found


def concrete(path: str, run_id: int) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(run_id) if m[1] == "run_id" else "a.txt", path)[1:]


def body_for(op: Operation, run_id: int) -> dict[str, Any] | None:
    if op.run_field is None:
        return None
    assert op.body in BODIES, f"add a valid {op.body} body to BODIES to walk {op.summary!r}"
    return {k: run_id if v == "{run}" else v for k, v in BODIES[op.body].items()}


async def test_every_change_to_a_run_by_another_user_is_refused(api: Api, mint: Mint) -> None:
    # Given alice's run, with parameters, a metric, a log line and an artifact
    run = await api("POST", "runs", body={"name": "alice's", "params": {"lr": 0.1}}, status=201)
    rid = run["id"]
    await api("POST", f"runs/{rid}/metrics", body={"rows": [["loss", 0.5, 0, None]]})
    await api("POST", f"runs/{rid}/logs", body={"entries": [{"text": "hers\n"}]}, status=201)
    await api("PUT", f"runs/{rid}/artifacts/a.txt", raw=b"her file", status=201)
    before = {k: v for k, v in (await api("GET", f"runs/{rid}")).items() if k != "duration"}
    operations = run_changing_operations()
    assert len(operations) >= 12

    # When bob (a token from another server on the same store) tries every one of them
    bob = bearer(mint("bob"))
    for path, method, op in operations:
        body = body_for(op, rid)
        refused = await api(
            method,
            concrete(path, rid),
            body=body,
            raw=None if body is not None or method == "DELETE" else b"{}",
            status=403,
            headers=bob,
        )

        # Then each is refused, naming the owner and who may act (a claim: the pool)
        assert refused["code"] == "forbidden", (method, path)
        if op.access == "pool":
            assert "only the pool's workers" in refused["message"], (method, path)
        else:
            message = refused["message"]
            assert f"run {rid} belongs to 'alice'" in message, (method, path, message)
            assert "c.LabRun.admins" in message and "token scoped to that run" in message

    # And nothing of alice's run changed
    after = await api("GET", f"runs/{rid}")
    assert {k: v for k, v in after.items() if k != "duration"} == before
    assert (await api("GET", f"runs/{rid}/artifacts"))["artifacts"][0]["size"] == len(b"her file")
    assert [e["text"] for e in (await api("GET", f"runs/{rid}/logs"))["entries"]] == ["hers\n"]
    assert (await api("GET", "runs", params={"parent_id": rid}))["total"] == 0
    assert (await api("GET", "reports"))["reports"] == []
    assert len((await api("GET", f"runs/{rid}/transitions"))["transitions"]) == 1


async def test_owner_admin_run_token_and_pool_may_change_a_run(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    run = await api("POST", "runs", body={"name": "alice's"}, status=201)
    rid = run["id"]
    other = await api("POST", "runs", body={"name": "another of alice's"}, status=201)

    # A token scoped to the run changes it, and runs it makes land under it...
    scoped = bearer(mint("alice", scope="run", run_id=rid))
    await api("POST", f"runs/{rid}/params", body={"params": {"by": "job"}}, headers=scoped)
    child = await api("POST", "runs", body={"name": "a cell"}, status=201, headers=scoped)
    assert child["parent_id"] == rid and child["user"] == "alice"
    await api("PATCH", f"runs/{child['id']}", body={"name": "renamed cell"}, headers=scoped)
    # ...but no other run of alice's, nor tokens
    refused = await api(
        "PATCH", f"runs/{other['id']}", body={"name": "x"}, status=403, headers=scoped
    )
    assert f"scoped to run {rid}" in refused["message"]
    await api("POST", "tokens", body={"name": "more"}, status=403, headers=scoped)

    # The pool's token changes anyone's run, and alone may claim one
    pool = bearer(mint("server", scope="pool"))
    await api("PATCH", f"runs/{rid}", body={"name": "by the pool"}, headers=pool)
    claim = {"attempt": 1, "worker": "w1"}
    refused = await api("POST", f"runs/{rid}/claim", body=claim, status=403)
    assert "only the pool's workers" in refused["message"]
    await api("POST", f"runs/{rid}/claim", body=claim, status=409, headers=pool)

    # An admin changes anyone's run; bob, made one, may now
    bob = bearer(mint("bob"))
    await api("PATCH", f"runs/{rid}", body={"name": "x"}, status=403, headers=bob)
    jp_serverapp.web_app.settings["labrun"].admins = ["bob"]
    renamed = await api("PATCH", f"runs/{rid}", body={"name": "by an admin"}, headers=bob)
    assert renamed["name"] == "by an admin"
    # but not with a token scoped to a run: a scoped token is never an admin's
    bobs_scoped = bearer(mint("bob", scope="run", run_id=child["id"]))
    await api("PATCH", f"runs/{rid}", body={"name": "y"}, status=403, headers=bobs_scoped)


async def test_patch_to_cancelled_stops_the_job_as_cancel_does(api: Api, jp_serverapp: Any) -> None:
    # Given a queued notebook job, and a queued sweep, in the dispatcher's backlog
    dispatcher = jp_serverapp.web_app.settings["labrun"].dispatcher
    job = {"notebook": "a.ipynb", "content": make_notebook("y = x", parameters="x = 0")}
    run = await api("POST", "jobs", body=job, status=201)
    sweep = await api("POST", "sweeps", body={**job, "grid": {"x": [1, 2]}}, status=201)
    children = [r["id"] for r in sweep["runs"]]
    assert {run["id"], *children} <= dispatcher.queued_ids

    # When they are set to cancelled by PATCH
    await api("PATCH", f"runs/{run['id']}", body={"status": "cancelled"})
    await api("PATCH", f"runs/{sweep['sweep']['id']}", body={"status": "cancelled"})

    # Then they leave the backlog, as by POST cancel, and the sweep's runs are cancelled
    assert not {run["id"], *children} & dispatcher.queued_ids
    for child in children:
        assert (await api("GET", f"runs/{child}"))["status"] == "cancelled"
    # A second PATCH to cancelled changes nothing and is no error
    again = await api("PATCH", f"runs/{run['id']}", body={"status": "cancelled"})
    assert again["status"] == "cancelled"


async def test_a_batch_of_updates_is_checked_item_by_item(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    # Given alice's run and queued job, and bob's run
    dispatcher = jp_serverapp.web_app.settings["labrun"].dispatcher
    alices = (await api("POST", "runs", body={"name": "alice's"}, status=201))["id"]
    job = {"notebook": "a.ipynb", "content": make_notebook("y = 1")}
    queued = (await api("POST", "jobs", body=job, status=201))["id"]
    bob = bearer(mint("bob"))
    bobs = (await api("POST", "runs", body={"name": "bob's"}, status=201, headers=bob))["id"]

    # When bob sends one batch about all three, and a run that does not exist
    updates = [
        {"run_id": bobs, "name": "renamed by bob"},
        {"run_id": alices, "name": "x"},
        {"run_id": queued, "status": "cancelled"},
        {"run_id": 10**9, "name": "y"},
    ]
    answer = await api("POST", "runs/updates", body={"updates": updates}, headers=bob)

    # Then his own run is changed, and each other item refused as its PATCH would be
    results = answer["results"]
    assert [r["run_id"] for r in results] == [bobs, alices, queued, 10**9]
    assert [r["error_status"] for r in results] == [None, 403, 403, 404]
    assert f"run {alices} belongs to 'alice'" in results[1]["error"]["message"]
    assert (await api("GET", f"runs/{bobs}"))["name"] == "renamed by bob"
    assert (await api("GET", f"runs/{alices}"))["name"] == "alice's"
    assert queued in dispatcher.queued_ids

    # And alice's own batch cancels her job as PATCH does (it leaves the backlog) and ends
    # her run with its last log line
    updates = [
        {"run_id": queued, "status": "cancelled"},
        {"run_id": alices, "status": "completed", "log": [{"text": "done\n"}]},
    ]
    answer = await api("POST", "runs/updates", body={"updates": updates})
    assert [r["status"] for r in answer["results"]] == ["cancelled", "completed"]
    assert queued not in dispatcher.queued_ids
    logs = await api("GET", f"runs/{alices}/logs")
    assert [e["text"] for e in logs["entries"]] == ["done\n"]

    # A batch of claims is the pool's alone
    claims = {"claims": [{"run_id": queued, "attempt": 1, "worker": "w1"}]}
    refused = await api("POST", "runs/claims", body=claims, status=403, headers=bob)
    assert "only the pool's workers" in refused["message"]
