"""Every route needs authentication, every route is in the OpenAPI document, and no
malformed body reaches a 500."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from support.api import Api, Mint, bearer

from labrun.jupyter_ext.handlers.base import NoRouteHandler, tornado_pattern
from labrun.settings import API_PREFIX

SAMPLE = {
    "run_id": "1",
    "name": "x",
    "version": "v1",
    "worker_id": "w1",
    "artifact": "a.txt",
    "report_id": "1",
    "token_id": "0123abcd",
}
METHODS = ("get", "post", "put", "patch", "delete")


def labrun_routes(serverapp: Any) -> list[tuple[str, type]]:
    """(regex, handler) of every route the running server registered under the API (but
    the catch-all that answers paths matching none).

    Walks tornado's routers: extensions' handlers sit under a host rule of the default
    router, Jupyter's own in the wildcard router.
    """
    routes = []

    def walk(rules: list[Any]) -> None:
        for rule in rules:
            if hasattr(rule.target, "rules"):
                walk(rule.target.rules)
                continue
            regex = getattr(rule.matcher, "regex", None)
            if rule.target is NoRouteHandler:
                continue
            if regex is not None and API_PREFIX in regex.pattern:
                routes.append((regex.pattern.rstrip("$"), rule.target))

    app = serverapp.web_app
    walk(app.default_router.rules)
    walk(app.wildcard_router.rules)
    return list(dict.fromkeys(routes))


def concrete(regex: str) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE[m.group(1)], regex)
    return path.split(API_PREFIX, 1)[1].lstrip("/")


def implemented(handler: type) -> list[str]:
    return [
        m.upper()
        for m in METHODS
        if getattr(handler, m, None) is not getattr(object, m, None) and m in handler.__dict__
    ]


async def test_every_route_refuses_anonymous_requests(jp_serverapp: Any, api: Api) -> None:
    routes = labrun_routes(jp_serverapp)
    assert len(routes) >= 20
    checked = 0
    for regex, handler in routes:
        for method in implemented(handler):
            # An empty Authorization header: no token, no cookie.
            response = await api(
                method,
                concrete(regex),
                raw=b"{}" if method not in ("GET", "DELETE") else None,
                status=403,
                headers={"Authorization": ""},
            )
            assert isinstance(response, dict), (method, regex, response.body[:200])
            assert response["code"] == "forbidden", (method, regex, response)
            checked += 1
    assert checked >= 30


async def test_openapi_document_is_valid_and_lists_every_route(jp_serverapp: Any, api: Api) -> None:
    document = await api("GET", "openapi.json")
    validate(document)
    documented = {API_PREFIX + tornado_pattern(p[len(API_PREFIX) :]) for p in document["paths"]}
    registered = {
        regex.split(jp_serverapp.base_url.rstrip("/"), 1)[-1]
        for regex, _ in labrun_routes(jp_serverapp)
    }
    assert registered == documented
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert op["summary"], f"{method} {path} has no summary"


def post_routes(serverapp: Any) -> list[tuple[str, Any]]:
    """(path, operation) of every POST route."""
    return [
        (concrete(regex), handler.post.__labrun_operation__)
        for regex, handler in labrun_routes(serverapp)
        if "post" in handler.__dict__
    ]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"unexpected": true}', b'"text"'])
async def test_malformed_bodies_get_400_on_every_post_route(
    jp_serverapp: Any, api: Api, mint: Mint, body: bytes
) -> None:
    await api("POST", "runs", body={}, status=201)
    await api(
        "POST",
        "datasets/x/versions",
        body={"content_hash": "abcdefgh", "size": 1, "file_count": 1},
        status=201,
    )
    routes = post_routes(jp_serverapp)
    assert len(routes) >= 8
    pool = bearer(mint("alice", scope="pool"))
    for path, op in routes:
        if path == "runs/1/cancel":
            continue  # takes no body
        # A worker's route (a claim) is read only for the pool's workers.
        headers = pool if op.access == "pool" else None
        error = await api("POST", path, raw=body, status=400, headers=headers)
        assert error["code"] == "invalid_request" and error["message"], path


async def test_issued_token_acts_for_the_issuing_user(jp_fetch: Any, api: Api) -> None:
    issued = await api("POST", "tokens", body={"name": "worker-1"}, status=201)
    assert issued["user"] == "alice" and issued["token"].startswith("lr1.")
    run = await api(
        "POST",
        "runs",
        body={"name": "from-worker"},
        status=201,
        headers={"Authorization": f"token {issued['token']}"},
    )
    assert run["user"] == "alice"
    forged = issued["token"][:-4] + "AAAA"
    await api("GET", "runs", status=403, headers={"Authorization": f"token {forged}"})
