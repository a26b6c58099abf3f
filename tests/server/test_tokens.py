"""Issued tokens: a lifetime, a scope and an id; listed, revoked, refused once expired."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from support.api import Api, Mint, bearer
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.jupyter_ext import auth


def app_of(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["labrun"]


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_a_token_has_an_id_scope_and_lifetime_and_is_listed(
    api: Api, jp_serverapp: Any
) -> None:
    # When alice asks for a token, and for one that lives an hour
    issued = await api("POST", "tokens", body={"name": "ci"}, status=201)
    short = await api("POST", "tokens", body={"name": "short", "lifetime": 3600}, status=201)

    # Then each acts for her, for all she may do, until it expires
    assert issued["user"] == "alice" and issued["scope"] == "user" and issued["status"] == "active"
    lifetime = app_of(jp_serverapp).token_lifetime
    for token, seconds in ((issued, lifetime), (short, 3600)):
        life = datetime.fromisoformat(token["expires_at"]) - datetime.fromisoformat(
            token["created_at"]
        )
        assert abs(life.total_seconds() - seconds) < 1
        assert claims(token["token"])["i"] == token["id"]
    run = await api("POST", "runs", body={}, status=201, headers=bearer(issued["token"]))
    assert run["user"] == "alice"

    # And both are listed, newest first, without the token itself
    listed = (await api("GET", "tokens"))["tokens"]
    assert [t["id"] for t in listed] == [short["id"], issued["id"]]
    assert all("token" not in t for t in listed)

    # Longer than the server allows is refused, saying the most
    too_long = await api("POST", "tokens", body={"name": "x", "lifetime": lifetime * 2}, status=400)
    assert "c.LabRun.token_lifetime" in too_long["message"]
    # A pool's token is never issued on request
    await api("POST", "tokens", body={"name": "x", "scope": "pool"}, status=400)


async def test_a_revoked_token_is_refused_saying_so(api: Api, mint: Mint) -> None:
    issued = await api("POST", "tokens", body={"name": "laptop"}, status=201)
    headers = bearer(issued["token"])
    await api("GET", "runs", headers=headers)

    # Bob may not revoke alice's token
    bob = bearer(mint("bob"))
    refused = await api("DELETE", f"tokens/{issued['id']}", status=403, headers=bob)
    assert "belongs to 'alice'" in refused["message"]

    revoked = await api("DELETE", f"tokens/{issued['id']}")
    assert revoked["status"] == "revoked" and revoked["revoked_by"] == "alice"
    refused = await api("GET", "runs", status=403, headers=headers)
    assert f"(id {issued['id']}) was revoked" in refused["message"]
    assert "labrun tokens create" in refused["message"]

    # It is gone from the list of working tokens, and still in the full one
    assert (await api("GET", "tokens"))["tokens"] == []
    everything = (await api("GET", "tokens", params={"all": "true"}))["tokens"]
    assert [(t["id"], t["status"]) for t in everything] == [(issued["id"], "revoked")]
    await api("DELETE", "tokens/0123456789abcdef", status=404)


async def test_expired_and_old_tokens_are_refused_saying_what_to_do(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    expired = await api("GET", "runs", status=403, headers=bearer(mint("alice", lifetime=-1)))
    assert "expired at" in expired["message"] and "labrun tokens create" in expired["message"]

    # A token of an older labrun: no id, scope nor expiry
    secret = app_of(jp_serverapp).store.tokens.secret
    payload = auth._b64(json.dumps({"u": "alice", "n": "pool", "k": "worker", "t": 1}).encode())
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    old = f"lr1.{payload}.{auth._b64(signature)}"
    refused = await api("GET", "runs", status=403, headers=bearer(old))
    assert "older labrun" in refused["message"]


async def test_a_token_cannot_outlive_the_token_that_asked(api: Api, mint: Mint) -> None:
    parent = mint("alice", lifetime=600)
    child = await api("POST", "tokens", body={"name": "child"}, status=201, headers=bearer(parent))
    assert claims(child["token"])["e"] <= claims(parent)["e"]


async def test_each_user_lists_their_own_tokens_and_an_admin_all(
    api: Api, mint: Mint, jp_serverapp: Any
) -> None:
    await api("POST", "tokens", body={"name": "alices"}, status=201)
    bob = bearer(mint("bob"))
    await api("POST", "tokens", body={"name": "bobs"}, status=201, headers=bob)
    assert [t["name"] for t in (await api("GET", "tokens", headers=bob))["tokens"]] == ["bobs"]
    app_of(jp_serverapp).admins = ["alice"]
    assert {t["name"] for t in (await api("GET", "tokens"))["tokens"]} == {"alices", "bobs"}


async def test_a_token_revoked_on_one_server_is_refused_by_another(
    api: Api, jp_server_config: dict[str, Any], tmp_path: Path
) -> None:
    # Given a second server on the same store, which accepts alice's token
    other = LabrunServer(tmp_path / "other", db_url=jp_server_config["LabRun"]["db_url"])
    other.start()
    try:
        issued = await api("POST", "tokens", body={"name": "shared"}, status=201)
        url = f"{other.url}labrun/api/v1/runs"
        headers = bearer(issued["token"])
        assert httpx.get(url, headers=headers, timeout=10).status_code == 200  # noqa: ASYNC210

        # When it is revoked here
        await api("DELETE", f"tokens/{issued['id']}")

        # Then the other server refuses it too, within its next look at revocations
        def refused() -> bool:
            response = httpx.get(url, headers=headers, timeout=10)
            return response.status_code == 403 and "was revoked" in response.json()["message"]

        wait_for(refused, timeout=30, what="the other server to refuse the revoked token")
    finally:
        other.stop()
