from __future__ import annotations

import json
import time
from typing import Any

import pytest
from support.api import Api, Mint

from labrun.jupyter_ext import auth


@pytest.fixture
def api(jp_fetch: Any) -> Api:
    """Call the labrun REST API in-process: ``await api("POST", "runs", body={...})``.

    Returns the decoded JSON; ``status=`` asserts the response status (default: 2xx).
    """

    async def call(
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        params: dict[str, Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {
            "method": method,
            "raise_error": False,
            "headers": dict(headers or {}),
        }
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif raw is not None:
            kwargs["body"] = raw
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = b""
        response = await jp_fetch("labrun", "api", "v1", *path.split("/"), params=params, **kwargs)
        if status is None:
            assert 200 <= response.code < 300, (response.code, response.body)
        else:
            assert response.code == status, (response.code, response.body)
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and response.body:
            return json.loads(response.body)
        return response

    return call


@pytest.fixture
def mint(jp_serverapp: Any) -> Mint:
    """Tokens signed with the running server's secret, as another server sharing its store
    would issue them (for bob, for a run, for a pool), without recording them."""
    secret = jp_serverapp.web_app.settings["labrun"].store.tokens.secret

    def make(
        user: str = "bob",
        *,
        scope: auth.Scope = "user",
        run_id: int | None = None,
        lifetime: float = 3600,
        name: str = "test",
    ) -> str:
        now = time.time()
        return auth.issue(
            secret,
            token_id=auth.new_id(),
            user=user,
            name=name,
            scope=scope,
            run_id=run_id,
            issued=now,
            expires=now + lifetime,
        )

    return make
