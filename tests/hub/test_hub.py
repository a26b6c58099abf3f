"""labrun under a real JupyterHub: the hub user is the run's user, and roles come from the
hub's groups. One hub for the module (the README's config, see support.hub): alice and bob
are researchers, carol leads project 'surgical-video' (group labrun-lead:surgical-video),
dora is an admin (group labrun-admin; a hub admin, she reaches the others' servers). Each
user's server runs labrun on one PostgreSQL database, with no pool: jobs stay queued."""

from __future__ import annotations

import getpass
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from support.hub import CHP_SCRIPT, Hub, UserApi
from support.notebooks import make_notebook
from support.postgres import PostgresServer

from labrun.cli import main as labrun_cli

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(1200)]

PROJECT = "surgical-video"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Hub]:
    missing = None
    if importlib.util.find_spec("jupyterhub") is None:
        missing = "jupyterhub is not installed (pip install -e '.[dev]')"
    elif not CHP_SCRIPT.exists():
        missing = f"configurable-http-proxy is not installed at {CHP_SCRIPT}: run `make test`"
    if missing is not None:
        if os.environ.get("LABRUN_REQUIRE_HUB"):
            pytest.fail(missing + "; LABRUN_REQUIRE_HUB is set")
        pytest.skip(missing)
    db_url = postgres.create_database()
    hub = Hub(tmp_path_factory.mktemp("hub"), db_url)
    try:
        hub.launch()
        # The schema is made once, before the servers start (the README's `labrun db
        # upgrade`), while the hub starts.
        done = CliRunner().invoke(labrun_cli, ["db", "upgrade", "--db-url", db_url])
        assert done.exit_code == 0, done.output
        hub.wait_started()
        hub.spawn("alice", "bob", "carol")
        yield hub
    finally:
        killed = hub.stop()
    assert not killed, f"the hub left these running, killed now: {killed}"


@pytest.fixture(scope="module")
def users(hub: Hub) -> Iterator[dict[str, UserApi]]:
    """Each user's labrun API on their own server; dora's on alice's."""
    apis = {user: UserApi(hub, user, hub.token(user)) for user in ("alice", "bob", "carol")}
    apis["dora"] = UserApi(hub, "dora", hub.token("dora"), server="alice")
    yield apis
    for api in apis.values():
        api.http.close()


def submit(api: UserApi, name: str) -> dict:
    job = {
        "notebook": "train.ipynb",
        "content": make_notebook("y = x", parameters="x = 0"),
        "project": PROJECT,
        "name": name,
    }
    return api("POST", "jobs", json=job, status=201)


def test_each_user_is_the_hub_user_with_their_roles(users: dict[str, UserApi]) -> None:
    me = {name: api("GET", "users/me") for name, api in users.items()}
    assert me["alice"] == {"user": "alice", "admin": False, "roles": ["researcher"], "leads": []}
    assert me["bob"]["roles"] == ["researcher"]
    assert me["carol"] == {
        "user": "carol",
        "admin": False,
        "roles": ["lead", "researcher"],
        "leads": [PROJECT],
    }
    # dora on alice's server is dora, not the server's owner
    assert me["dora"] == {
        "user": "dora",
        "admin": True,
        "roles": ["admin", "researcher"],
        "leads": [],
    }


def test_the_dispatching_server_publishes_its_address_through_the_hubs_proxy(
    users: dict[str, UserApi],
) -> None:
    # Every server names the one that dispatches, at the URL the pool's workers report to:
    # its user's address through the hub's proxy (the README's LABRUN_PUBLIC_URL)
    seen = {name: users[name]("GET", "pool")["dispatcher"] for name in ("alice", "bob")}
    assert seen["alice"]["server"] == seen["bob"]["server"], seen
    holder = seen["alice"]["user"]
    assert seen["alice"]["url"] == users[holder].server_url


def test_who_may_cancel_a_queued_job(users: dict[str, UserApi]) -> None:
    alice, bob, carol, dora = (users[u] for u in ("alice", "bob", "carol", "dora"))
    # Given alice's two jobs, submitted through her server: recorded under alice, not the
    # OS account every server runs as
    first, second = submit(alice, "first"), submit(alice, "second")
    assert first["user"] == second["user"] == "alice" != getpass.getuser()
    assert first["status"] == "queued"

    # Everyone sees them, through their own server
    for api in users.values():
        listed = api("GET", "runs", params={"project": PROJECT, "user": "alice"})
        assert {first["id"], second["id"]} <= {r["id"] for r in listed["runs"]}

    # bob may not cancel alice's job: the refusal says who may, and how to become a lead
    refused = bob("POST", f"runs/{first['id']}/cancel", status=403)
    message = refused["message"]
    assert f"run {first['id']} belongs to 'alice' (project '{PROJECT}')" in message
    assert "you are bob (researcher)" in message
    assert f"JupyterHub group 'labrun-lead:{PROJECT}'" in message and "'labrun-admin'" in message
    assert bob("GET", f"runs/{first['id']}")["status"] == "queued"

    # carol leads the project: she may; dora is an admin: she may too
    assert carol("POST", f"runs/{first['id']}/cancel")["status"] == "cancelled"
    assert dora("POST", f"runs/{second['id']}/cancel")["status"] == "cancelled"
    # and carol's own job, bob may not cancel either
    carols = submit(carol, "carol's")
    assert carols["user"] == "carol"
    bob("POST", f"runs/{carols['id']}/cancel", status=403)


def test_a_kernel_of_alices_server_acts_for_alice(users: dict[str, UserApi]) -> None:
    out = users["alice"].execute(
        "import labrun\n"
        "from labrun.client import Client\n"
        f"run = labrun.init(project={PROJECT!r}, name='from the kernel')\n"
        "print(run.id, Client().identity().user)\n"
        "labrun.finish()\n"
    )
    run_id, user = out.split()
    assert user == "alice"
    run = users["bob"]("GET", f"runs/{run_id}")
    assert run["user"] == "alice" and run["status"] == "completed"


def test_labrun_tokens_act_for_the_hub_user_with_their_groups(
    users: dict[str, UserApi], hub: Hub
) -> None:
    alice, carol = users["alice"], users["carol"]
    job = submit(alice, "for carol's token")

    # A token alice's server issues works on her server (the hub never saw it)...
    token = alice("POST", "tokens", json={"name": "script"}, status=201)["token"]
    scripted = UserApi(hub, "alice", token)
    run = scripted("POST", "runs", json={"name": "from a script", "project": PROJECT}, status=201)
    assert run["user"] == "alice"
    # ...and carol's, on her server, gets her hub groups: she leads the project
    carols = UserApi(
        hub, "carol", carol("POST", "tokens", json={"name": "cli"}, status=201)["token"]
    )
    assert carols("GET", "users/me")["leads"] == [PROJECT]
    assert carols("POST", f"runs/{job['id']}/cancel")["status"] == "cancelled"
    scripted.http.close()
    carols.http.close()

    # `labrun whoami` through the hub's proxy, with carol's hub token
    done = subprocess.run(
        [sys.executable, "-m", "labrun.cli", "whoami"],
        env={**os.environ, "LABRUN_SERVER_URL": carol.server_url, "LABRUN_TOKEN": carol.token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"carol: lead of {PROJECT}; researcher"
