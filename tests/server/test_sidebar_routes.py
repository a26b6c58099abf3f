"""The routes the JupyterLab sidebar needs beyond the runs API: identity, cancel rights,
reports served without their scripts, sparklines and sorting by duration."""

from __future__ import annotations

from typing import Any

from support.api import Api

from labrun.models import CreateRun


def labrun_app(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["labrun"]


async def test_identity_names_the_user_and_admin_rights(api: Api, jp_serverapp: Any) -> None:
    me = {"user": "alice", "admin": False, "roles": ["researcher"], "leads": []}
    assert await api("GET", "users/me") == me
    labrun_app(jp_serverapp).admins = ["alice"]
    me = {**me, "admin": True, "roles": ["admin", "researcher"]}
    assert await api("GET", "users/me") == me


async def test_only_the_owner_or_an_admin_cancels_a_run(api: Api, jp_serverapp: Any) -> None:
    # Given a queued run that belongs to bob
    app = labrun_app(jp_serverapp)
    bobs = app.store.runs.create(CreateRun(name="bobs", status="queued", queue="default"), "bob")

    # When alice, who is no admin, cancels it, she is refused and the run is untouched
    refused = await api("POST", f"runs/{bobs.id}/cancel", status=403)
    assert "belongs to 'bob'" in refused["message"] and "c.LabRun.admins" in refused["message"]
    assert (await api("GET", f"runs/{bobs.id}"))["status"] == "queued"

    # Then as an admin she may
    app.admins = ["alice"]
    assert (await api("POST", f"runs/{bobs.id}/cancel"))["status"] == "cancelled"


async def test_a_report_is_listed_and_served_without_its_scripts(api: Api) -> None:
    # Given a run that rendered a report with a script in it
    run = await api("POST", "runs", body={"name": "report run"}, status=201)
    html = b"<html><body><h1>Sweep 3</h1><script>alert(1)</script></body></html>"
    await api("PUT", f"runs/{run['id']}/artifacts/report.html", raw=html, status=201)
    await api("PUT", f"runs/{run['id']}/artifacts/report.ipynb", raw=b"{}", status=201)

    # When it is recorded as a report
    report = await api(
        "POST",
        "reports",
        body={
            "name": "sweep 3",
            "notebook": "notebooks/sweep_report.ipynb",
            "params": {"sweep": 3},
            "run_id": run["id"],
            "html_artifact": "report.html",
            "notebook_artifact": "report.ipynb",
        },
        status=201,
    )

    # Then it is listed newest first, and its HTML comes with a policy that blocks scripts
    listed = await api("GET", "reports")
    assert [r["id"] for r in listed["reports"]] == [report["id"]]
    assert listed["reports"][0]["has_html"] and listed["reports"][0]["has_notebook"]
    assert [r["id"] for r in (await api("GET", "reports", params={"run_id": 3}))["reports"]] == [
        report["id"]
    ]
    served = await api("GET", f"reports/{report['id']}/html")
    assert served.body == html
    assert served.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = served.headers["Content-Security-Policy"]
    assert "script-src 'none'" in policy and "default-src 'none'" in policy
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert (await api("GET", f"reports/{report['id']}/notebook")).body == b"{}"


async def test_a_report_needs_the_runs_artifact(api: Api) -> None:
    run = await api("POST", "runs", body={"name": "no html"}, status=201)
    missing = await api(
        "POST",
        "reports",
        body={
            "name": "r",
            "notebook": "r.ipynb",
            "run_id": run["id"],
            "html_artifact": "report.html",
        },
        status=404,
    )
    assert "has no artifact 'report.html'" in missing["message"]
    await api("GET", "reports/999/html", status=404)


async def test_runs_come_with_sparklines_of_a_metric(api: Api) -> None:
    run = await api("POST", "runs", body={"name": "curve"}, status=201)
    rows = [["loss", 1.0 / (step + 1), step, None] for step in range(50)]
    await api("POST", f"runs/{run['id']}/metrics", body={"rows": rows})
    other = await api("POST", "runs", body={"name": "no metric"}, status=201)

    listing = await api("GET", "runs", params={"spark": "loss"})
    spark = listing["sparklines"][str(run["id"])]
    # The last 30 values, oldest first
    assert spark == [1.0 / (step + 1) for step in range(20, 50)]
    assert str(other["id"]) not in listing["sparklines"]
    assert (await api("GET", "runs"))["sparklines"] == {}
