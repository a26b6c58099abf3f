"""`labrun tokens`: create one, list them, revoke one, against a real server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from support.server import LabrunServer

from labrun.cli import main
from labrun.client import Client
from labrun.errors import Unauthorized
from labrun.models import CreateRun, UpdateRun


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def server(labrun_server: LabrunServer, monkeypatch: pytest.MonkeyPatch) -> LabrunServer:
    monkeypatch.setenv("LABRUN_SERVER_URL", labrun_server.url)
    monkeypatch.setenv("LABRUN_TOKEN", labrun_server.token)
    return labrun_server


def test_create_list_use_and_revoke_a_token(server: LabrunServer) -> None:
    # When a token is created for a script
    text = invoke("tokens", "create", "nightly", "--lifetime", "12h")
    token = next(line for line in text.splitlines() if line.startswith("lr1."))
    issued = json.loads(invoke("tokens", "--json"))["tokens"][0]
    assert issued["name"] == "nightly" and issued["scope"] == "user"
    assert f"labrun tokens revoke {issued['id']}" in text

    # Then it works, and is listed
    with Client(server.url, token) as script:
        script.create_run(CreateRun(name="from the script"))
    assert "nightly" in invoke("tokens")

    # And once revoked it is refused, saying so
    assert "Revoked token 'nightly'" in invoke("tokens", "revoke", issued["id"])
    with Client(server.url, token) as script, pytest.raises(Unauthorized, match="was revoked"):
        script.list_runs()
    assert "No tokens" in invoke("tokens")
    assert "revoked" in invoke("tokens", "--all")


def test_a_token_scoped_to_a_run_changes_that_run_only(server: LabrunServer) -> None:
    with Client(server.url, server.token) as client:
        mine = client.create_run(CreateRun(name="mine"))
        other = client.create_run(CreateRun(name="other"))
    issued = json.loads(invoke("tokens", "create", "job", "--run", str(mine.id), "--json"))
    assert issued["scope"] == "run" and issued["run_id"] == mine.id
    with Client(server.url, issued["token"]) as scoped:
        scoped.update_run(mine.id, UpdateRun(name="renamed"))
        with pytest.raises(Unauthorized, match=f"scoped to run {mine.id}"):
            scoped.update_run(other.id, UpdateRun(name="not mine"))


def test_a_bad_lifetime_or_id_is_one_clear_line(server: LabrunServer) -> None:
    assert "is not a lifetime like 90m" in invoke(
        "tokens", "create", "x", "--lifetime", "soon", code=2
    )
    assert invoke("tokens", "revoke", "abcdef", code=1).strip() == (
        "Error: no token with id 'abcdef'; `labrun tokens` lists yours"
    )
