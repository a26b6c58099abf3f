"""Roles from c.LabRun.roles on a real server: a lead cancels and changes the runs of the
projects they lead, an admin every run, a researcher their own; GET users/me shows them."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import Api, Mint, bearer
from support.notebooks import make_notebook

from labrun.jupyter_ext.app import LabRun

ROLES = {"admin": ["dora"], "lead": {"carol": ["surgical-video"]}}


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    return {**jp_server_config, "LabRun": {**jp_server_config["LabRun"], "roles": ROLES}}


async def job(api: Api, project: str) -> int:
    body = {"notebook": "a.ipynb", "content": make_notebook("y = 1"), "project": project}
    run = await api("POST", "jobs", body=body, status=201)
    assert run["user"] == "alice" and run["status"] == "queued"
    return int(run["id"])


async def test_users_me_shows_the_roles(api: Api, mint: Mint) -> None:
    # The server's own token acts for c.LabRun.user, alice: a researcher
    assert await api("GET", "users/me") == {
        "user": "alice",
        "admin": False,
        "roles": ["researcher"],
        "leads": [],
    }
    carol = await api("GET", "users/me", headers=bearer(mint("carol")))
    assert carol["roles"] == ["lead", "researcher"] and carol["leads"] == ["surgical-video"]
    dora = await api("GET", "users/me", headers=bearer(mint("dora")))
    assert dora["roles"] == ["admin", "researcher"] and dora["admin"] is True
    # A token scoped to a run holds no role, whoever it acts for
    scoped = await api("GET", "users/me", headers=bearer(mint("dora", scope="run", run_id=1)))
    assert scoped["roles"] == ["researcher"] and scoped["admin"] is False


async def test_a_lead_cancels_the_runs_of_their_project_only(api: Api, mint: Mint) -> None:
    theirs, other = await job(api, "surgical-video"), await job(api, "mri")
    carol, bob = bearer(mint("carol")), bearer(mint("bob"))

    # bob, a researcher, may not: the refusal says who may and how to become a lead
    refused = await api("POST", f"runs/{theirs}/cancel", status=403, headers=bob)
    assert refused["message"].startswith(
        f"run {theirs} belongs to 'alice' (project 'surgical-video'); only they, a lead of "
        "'surgical-video', an admin or a token scoped to that run may change it, and you are "
        'bob (researcher). A lead is named in c.LabRun.roles ({"lead": {"bob": '
        '["surgical-video"]}})'
    )
    assert "JupyterHub" not in refused["message"]

    # carol leads surgical-video: she cancels and renames its run, but not mri's
    cancelled = await api("POST", f"runs/{theirs}/cancel", headers=carol)
    assert cancelled["status"] == "cancelled"
    await api("PATCH", f"runs/{theirs}", body={"name": "by the lead"}, headers=carol)
    refused = await api("POST", f"runs/{other}/cancel", status=403, headers=carol)
    assert "you are carol (lead of 'surgical-video', researcher)" in refused["message"]
    # nor with a token scoped to another run: it holds no role
    scoped = bearer(mint("carol", scope="run", run_id=other + 1000))
    await api("PATCH", f"runs/{theirs}", body={"name": "x"}, status=403, headers=scoped)


async def test_an_admin_from_roles_changes_every_run_and_sees_every_token(
    api: Api, mint: Mint
) -> None:
    run = await job(api, "mri")
    dora = bearer(mint("dora"))
    assert (await api("POST", f"runs/{run}/cancel", headers=dora))["status"] == "cancelled"
    await api("POST", "tokens", body={"name": "alices"}, status=201)
    listed = await api("GET", "tokens", headers=dora)
    assert "alice" in {t["user"] for t in listed["tokens"]}


def test_a_jupyterhub_server_is_its_hub_users(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its own pool token acts for the hub user, not for the OS account every server runs as
    monkeypatch.delenv("LABRUN_USER", raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert LabRun().user == "alice"
    monkeypatch.setenv("LABRUN_USER", "lab")
    assert LabRun().user == "lab"
