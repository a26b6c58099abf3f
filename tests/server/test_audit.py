"""The audit log: every change made through the server is in it, with who, what and the
answer; each user reads their own entries, an admin everyone's; ``labrun audit``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from support.api import bearer
from support.notebooks import make_notebook
from support.server import LabrunServer

from labrun.cli import main
from labrun.jupyter_ext import auth
from labrun.jupyter_ext.handlers.base import operation_of
from labrun.jupyter_ext.routes import ROUTES
from labrun.jupyter_ext.store import Database
from labrun.jupyter_ext.store.audit import AuditStore
from labrun.jupyter_ext.store.tokens import TokenStore
from labrun.models import ListAuditQuery

CHANGES = ("post", "put", "patch", "delete")
NOTEBOOK = make_notebook("x = 1", parameters="lr = 0.1")


class Server:
    """The module's server (alice's; carol is an admin) and clients acting for its users."""

    def __init__(self, server: LabrunServer) -> None:
        self.server = server
        db = Database(server.db_url)
        self.secret = TokenStore(db).secret
        db.close()

    def token(self, user: str, scope: auth.Scope = "user", run_id: int | None = None) -> str:
        """A token signed with the server's secret, as another server on its store issues."""
        now = time.time()
        return auth.issue(
            self.secret,
            token_id=auth.new_id(),
            user=user,
            name="test",
            scope=scope,
            run_id=run_id,
            issued=now,
            expires=now + 3600,
        )

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.url}labrun/api/v1/",
            headers=bearer(token or self.server.token),
            timeout=30,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    labrun = LabrunServer(
        tmp_path_factory.mktemp("audit"), env={"LABRUN_USER": "alice", "LABRUN_ADMINS": "carol"}
    )
    labrun.start()
    yield Server(labrun)
    labrun.stop()


def changes() -> list[tuple[str, str]]:
    """(METHOD, path) of every change the route table has: a route added later is walked."""
    return [
        (method.upper(), path)
        for path, handler in ROUTES
        for method in CHANGES
        if operation_of(handler, method) is not None
    ]


# A request per change: (method, path template) -> what to send, given what earlier ones
# made (`made`). Each returns (path, body or raw bytes, headers, status expected, target
# expected, detail expected in the entry).
Step = Callable[[dict[str, Any]], tuple[str, Any, dict[str, str], int, str | None, dict[str, Any]]]


def walk(server: Server) -> dict[tuple[str, str], Step]:
    pool = bearer(server.token("server", scope="pool"))
    job = {"notebook": "walk.ipynb", "content": NOTEBOOK}
    sample = {"worker_id": "w-walk", "time": time.time(), "cpu_percent": 10.0}
    return {
        ("POST", "/runs"): lambda m: ("runs", {"name": "walked"}, {}, 201, "run:new", {}),
        ("PATCH", "/runs/{run_id}"): lambda m: (
            f"runs/{m['run']}",
            {"name": "renamed", "tags": ["a"]},
            {},
            200,
            f"run:{m['run']}",
            {"fields": ["name", "tags"]},
        ),
        # A batch is noted per item, each about its run.
        ("POST", "/runs/updates"): lambda m: (
            "runs/updates",
            {"updates": [{"run_id": m["run"], "name": "batch-named"}]},
            {},
            200,
            f"run:{m['run']}",
            {"fields": ["updates"]},
        ),
        ("POST", "/runs/{run_id}/params"): lambda m: (
            f"runs/{m['run']}/params",
            {"params": {"lr": 0.1}},
            {},
            200,
            f"run:{m['run']}",
            {},
        ),
        ("POST", "/runs/{run_id}/metrics"): lambda m: (
            f"runs/{m['run']}/metrics",
            {"rows": [["loss", 0.5, 0, None]]},
            {},
            200,
            f"run:{m['run']}",
            {"fields": ["rows"]},
        ),
        ("POST", "/runs/{run_id}/logs"): lambda m: (
            f"runs/{m['run']}/logs",
            {"entries": [{"text": "hi\n"}]},
            {},
            201,
            f"run:{m['run']}",
            {},
        ),
        ("PUT", "/runs/{run_id}/artifacts/{artifact}"): lambda m: (
            f"runs/{m['run']}/artifacts/out/report.html",
            b"<p>hi</p>",
            {},
            201,
            f"run:{m['run']}",
            {"artifact": "out/report.html"},
        ),
        ("POST", "/datasets"): lambda m: (
            "datasets",
            {"name": "walked-data"},
            {},
            201,
            "dataset:walked-data",
            {},
        ),
        ("POST", "/datasets/{name}/versions"): lambda m: (
            "datasets/walked-data/versions",
            {"content_hash": "0" * 16, "size": 1, "file_count": 1},
            {},
            201,
            "dataset:walked-data",
            {},
        ),
        ("POST", "/runs/{run_id}/datasets"): lambda m: (
            f"runs/{m['run']}/datasets",
            {"dataset": "walked-data", "version": m["version"]},
            {},
            201,
            f"run:{m['run']}",
            {},
        ),
        ("POST", "/reports"): lambda m: (
            "reports",
            {
                "name": "r",
                "notebook": "r.ipynb",
                "run_id": m["run"],
                "html_artifact": "out/report.html",
            },
            {},
            201,
            "report:new",
            {},
        ),
        ("POST", "/queues"): lambda m: ("queues", {"name": "walked"}, {}, 201, "queue:walked", {}),
        ("PUT", "/workers/{worker_id}"): lambda m: (
            "workers/w-walk",
            {"host": "h", "nthreads": 1},
            pool,
            200,
            "worker:w-walk",
            {},
        ),
        ("POST", "/gpus/samples"): lambda m: (
            "gpus/samples",
            {"hosts": [sample]},
            pool,
            201,
            None,
            {},
        ),
        ("POST", "/params/check"): lambda m: (
            "params/check",
            {"text": "lr = 0.2"},
            {},
            200,
            None,
            {},
        ),
        ("POST", "/jobs"): lambda m: ("jobs", job, {}, 201, "run:new", {}),
        ("POST", "/sweeps"): lambda m: (
            "sweeps",
            {**job, "grid": {"lr": [0.1, 0.2]}},
            {},
            201,
            "run:new",
            {},
        ),
        ("POST", "/runs/{run_id}/rerun"): lambda m: (
            f"runs/{m['job']}/rerun",
            None,
            {},
            201,
            f"run:{m['job']}",
            {"rerun": "new"},
        ),
        # Deliberately refused: a claim is granted only for an attempt the pool dispatched.
        ("POST", "/runs/{run_id}/claim"): lambda m: (
            f"runs/{m['job']}/claim",
            {"attempt": 1, "worker": "w-walk"},
            pool,
            409,
            f"run:{m['job']}",
            {"error": "conflict"},
        ),
        # The same in a batch: the request is answered, the item refused.
        ("POST", "/runs/claims"): lambda m: (
            "runs/claims",
            {"claims": [{"run_id": m["job"], "attempt": 1, "worker": "w-walk"}]},
            pool,
            200,
            f"run:{m['job']}",
            {"error": "conflict"},
        ),
        ("POST", "/runs/{run_id}/cancel"): lambda m: (
            f"runs/{m['job']}/cancel",
            None,
            {},
            200,
            f"run:{m['job']}",
            {},
        ),
        # (A pool-less server: the grant waits, and is answered at once with wait=0.)
        ("POST", "/grants"): lambda m: (
            "grants",
            {"key": "walked-cell", "gpus": 1, "wait": 0},
            {},
            200,
            "grant:walked-cell",
            {},
        ),
        ("POST", "/grants/release"): lambda m: (
            "grants/release",
            {"keys": ["walked-cell"]},
            {},
            200,
            None,
            {"keys": ["walked-cell"]},
        ),
        ("POST", "/tokens"): lambda m: ("tokens", {"name": "walked"}, {}, 201, "token:new", {}),
        ("DELETE", "/tokens/{token_id}"): lambda m: (
            f"tokens/{m['token']}",
            None,
            {},
            200,
            f"token:{m['token']}",
            {},
        ),
    }


def test_every_change_through_the_api_is_audited(server: Server) -> None:
    steps = walk(server)
    missing = [change for change in changes() if change not in steps]
    assert not missing, f"add a request for each of {missing} to walk() in this test"
    made: dict[str, Any] = {}
    expected = []
    with server.client() as alice:
        # When alice (and the pool, for a worker's requests) makes every change once
        for method, template in steps:
            path, body, headers, status, target, detail = steps[method, template](made)
            content = body if isinstance(body, bytes) else None
            response = alice.request(
                method,
                path,
                json=None if content is not None else body,
                content=content,
                headers=headers,
            )
            assert response.status_code == status, (method, path, response.text)
            answer = response.json()
            made.update(
                {
                    "POST /runs": {"run": answer.get("id")},
                    "POST /jobs": {"job": answer.get("id")},
                    "POST /tokens": {"token": answer.get("id"), "secret": answer.get("token")},
                    "POST /datasets/{name}/versions": {"version": answer.get("version")},
                }.get(f"{method} {template}", {})
            )
            new = (answer.get("sweep") or answer).get("id")
            if target is not None and target.endswith(":new"):
                target = target.replace("new", str(new))
            if detail.get("rerun") == "new":
                detail = {"rerun": new}
            expected.append((method, template, path, status, target, detail))

    # (but for requests that did not authenticate: there is no one to name)
    with server.client(made["secret"]) as revoked, httpx.Client() as anyone:
        assert revoked.post("runs", json={}).status_code == 403
        assert anyone.post(f"{server.server.url}labrun/api/v1/runs", json={}).status_code == 403

    # Then each has its entry (an admin reads them all): who, which action, about what,
    # and the answer
    with server.client(server.token("carol")) as carol:
        entries = carol.get("audit", params={"limit": 1000}).json()["entries"]
    assert len(entries) == len(expected)
    for (method, template, path, status, target, detail), entry in zip(
        expected, reversed(entries), strict=True
    ):
        handler = dict(ROUTES)[template]
        op = operation_of(handler, method.lower())
        assert op is not None
        worker = template.startswith(("/workers", "/gpus")) or template.endswith(
            ("/claim", "/claims")
        )
        assert entry["user"] == ("server" if worker else "alice"), entry
        assert entry["scope"] == ("pool" if worker else "user"), entry
        assert (entry["action"], entry["method"], entry["status"]) == (op.action, method, status)
        assert entry["path"] == f"/labrun/api/v1/{path}"
        found = f"{entry['target_type']}:{entry['target_id']}" if entry["target_id"] else None
        assert found == target, (method, template, entry)
        assert detail.items() <= (entry["detail"] or {}).items(), (method, template, entry)
        assert re.fullmatch(r".+:\d+:\d+/\d+", entry["server"])  # host:pid:start/n
    # And no entry holds a value the requests sent: the token, the parameters, the notebook
    text = json.dumps(entries)
    assert made["secret"] not in text and "lr = 0.2" not in text and "renamed" not in text


def test_each_user_reads_their_own_entries_and_an_admin_everyones(server: Server) -> None:
    with (
        server.client(server.token("bob")) as bob,
        server.client(server.token("carol")) as carol,
        server.client() as alice,
    ):
        run = alice.post("runs", json={"name": "alice's"}).json()
        # Bob's change to his own run, and his refused try at alice's
        assert bob.post("runs", json={"name": "bob's"}).status_code == 201
        assert bob.post(f"runs/{run['id']}/cancel").status_code == 403

        # Bob reads his own entries, the refusal included, and no one else's
        mine = bob.get("audit").json()["entries"]
        assert [(e["user"], e["action"], e["status"]) for e in mine] == [
            ("bob", "run.cancel", 403),
            ("bob", "run.create", 201),
        ]
        assert mine[0]["detail"] == {"error": "forbidden"}
        refused = bob.get("audit", params={"user": "alice"})
        assert refused.status_code == 403 and "c.LabRun.admins" in refused.json()["message"]

        # Carol, an admin, reads everyone's, and filters them
        users = {e["user"] for e in carol.get("audit", params={"limit": 1000}).json()["entries"]}
        assert {"alice", "bob"} <= users
        about = carol.get("audit", params={"run": run["id"]}).json()["entries"]
        assert [(e["user"], e["action"]) for e in about] == [
            ("bob", "run.cancel"),
            ("alice", "run.create"),
        ]
        # A page at a time, newest first
        first = carol.get("audit", params={"user": "bob", "limit": 1}).json()
        second = carol.get(
            "audit", params={"user": "bob", "limit": 1, "cursor": first["next_cursor"]}
        ).json()
        assert [e["id"] for e in first["entries"] + second["entries"]] == [e["id"] for e in mine]
        assert second["next_cursor"] is None
        # Reading the log is no change: it is not in it
        assert not carol.get("audit", params={"action": "audit"}).json()["entries"]


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_labrun_audit_lists_a_users_recent_changes(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABRUN_SERVER_URL", server.server.url)
    monkeypatch.setenv("LABRUN_TOKEN", server.server.token)
    with server.client() as alice:
        run = alice.post("runs", json={"name": "for the cli"}).json()
        alice.post(f"runs/{run['id']}/cancel")

    # alice's changes of the last hour, newest first, in 80 columns
    text = invoke("audit", "--user", "alice", "--since", "1h")
    lines = text.splitlines()
    assert lines[0].split() == ["time", "user", "action", "target", "status", "server"]
    assert "run.cancel" in lines[1] and f"run {run['id']}" in lines[1] and "200" in lines[1]
    assert all(len(line) <= 80 for line in lines), text
    listed = json.loads(
        invoke("audit", "--user", "alice", "--since", "1h", "--run", str(run["id"]), "--json")
    )
    assert [e["action"] for e in listed["entries"]] == ["run.cancel", "run.create"]
    # Nothing after now; a time that is none is refused, saying what would do
    assert "No audit entries" in invoke("audit", "--since", "2099-01-01T00:00:00Z")
    error = invoke("audit", "--since", "yesterday", code=1)
    assert "'yesterday' is neither an ISO time" in error and "7d" in error


def test_what_is_pending_when_the_server_stops_is_written(server: Server) -> None:
    # (Last in the module: it stops the module's server.)
    with server.client() as alice:
        run = alice.post("runs", json={"name": "just before the stop"}).json()
    server.server.stop()
    db = Database(server.server.db_url)
    try:
        query = ListAuditQuery(run=run["id"])
        (entry,) = AuditStore(db).list_entries(query).entries
    finally:
        db.close()
    assert (entry.action, entry.status) == ("run.create", 201)
