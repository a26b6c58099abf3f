"""What the dispatcher's backlog holds: the jobs submitted, in the order they are to start,
none of a sweep once it is cancelled, however many runs it had, and a sweep's report once
its runs ended."""

from __future__ import annotations

import asyncio
from typing import Any

from support.api import Api, Mint, bearer
from support.notebooks import make_notebook

from labrun.jupyter_ext.scheduling import Capacity, choose
from labrun.models import SubmitSweep

REPORT = {"notebook": "r.ipynb", "content": make_notebook("print(sweep)", parameters="sweep = 0")}

JOB = {"notebook": "a.ipynb", "content": make_notebook("y = x", parameters="x = 0")}


async def test_cancelling_a_big_sweep_cancels_every_run_and_empties_the_backlog(
    api: Api, jp_serverapp: Any
) -> None:
    # Given a sweep of 2,000 queued runs in the dispatcher's backlog, and a job beside it
    # (the sweep made in the store, as its handler does, without an HTTP client's timeout)
    labrun = jp_serverapp.web_app.settings["labrun"]
    dispatcher = labrun.dispatcher
    other = await api("POST", "jobs", body=JOB, status=201)
    sweep = await asyncio.to_thread(
        labrun.store.sweeps.submit,
        SubmitSweep.model_validate({**JOB, "grid": {"x": list(range(2000))}}),
        "alice",
    )
    dispatcher.add(await asyncio.to_thread(labrun.store.dispatch.queued))
    children = {r.id for r in sweep.runs}
    assert len(children) == 2000 and children <= dispatcher.queued_ids

    # When the sweep is cancelled
    cancelled = await api("POST", f"runs/{sweep.sweep.id}/cancel")

    # Then it and all its runs are cancelled, and only the other job is left to dispatch
    assert cancelled["status"] == "cancelled"
    after = await api("GET", f"sweeps/{sweep.sweep.id}")
    assert after["counts"] == {"cancelled": 2000}
    assert dispatcher.queued_ids == {other["id"]}


async def test_a_jobs_priority_orders_its_users_jobs_in_the_backlog(
    api: Api, jp_serverapp: Any
) -> None:
    # Given alice's job, then her more urgent one, and a re-run of that one
    dispatcher = jp_serverapp.web_app.settings["labrun"].dispatcher
    first = await api("POST", "jobs", body=JOB, status=201)
    urgent = await api("POST", "jobs", body={**JOB, "priority": 5}, status=201)
    again = await api("POST", f"runs/{urgent['id']}/rerun", status=201)

    # Then the urgent one and its re-run start before her older job
    order = choose(dispatcher.backlog, Capacity(slots=3, free_gpus=0, biggest=0))
    assert [job.id for job in order] == [urgent["id"], again["id"], first["id"]]

    # and a priority the store cannot hold is refused, naming the field
    refused = await api("POST", "jobs", body={**JOB, "priority": 2**31}, status=400)
    assert "body.priority" in refused["message"]


async def test_a_sweep_moves_with_its_runs_claims_and_ends_and_queues_its_report(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    # Given a sweep of two runs with a report, both dispatched
    labrun = jp_serverapp.web_app.settings["labrun"]
    dispatcher = labrun.dispatcher
    sweep = await api("POST", "sweeps", body={**JOB, "grid": {"x": [1, 2]}, "report": REPORT})
    sweep_id, children = sweep["sweep"]["id"], [r["id"] for r in sweep["runs"]]
    specs = await asyncio.to_thread(labrun.store.dispatch.next_attempts, children, 3600)
    pool = bearer(mint("server", scope="pool"))

    # When their workers claim them, one right after the other
    for spec in specs:
        claim = {"attempt": spec.attempt, "worker": "w1"}
        await api("POST", f"runs/{spec.run_id}/claim", body=claim, headers=pool)
    # (the claims' sweep is settled in one batch after them: wait for it, not for time)
    await dispatcher.sweeps.wait(30)

    # Then the sweep is running
    assert (await api("GET", f"runs/{sweep_id}"))["status"] == "running"

    # and once both ended, as the dispatcher sees their tasks end, it completed and its
    # report is queued for the dispatcher
    for run_id in children:
        await api("PATCH", f"runs/{run_id}", body={"status": "completed"}, headers=pool)
        dispatcher.sweeps.add(run_id)
    await dispatcher.sweeps.wait(30)
    after = await api("GET", f"sweeps/{sweep_id}")
    assert after["sweep"]["status"] == "completed" and after["report_run"] is not None
    assert after["report_run"] in dispatcher.queued_ids
