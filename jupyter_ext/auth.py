"""Tokens the server issues to workers, jobs and kernels.

A token is ``lr1.<payload>.<signature>``: the payload holds its claims, and the HMAC
signature uses a secret kept in the database, so every server sharing that database
accepts it and checking one costs no query. The claims:

- ``i``: the token's id (its row in the ``tokens`` table, what ``labrun tokens revoke`` takes);
- ``u``: the user it acts for; ``n``: its name;
- ``s``: its scope: ``user`` (all the user may do), ``run`` (changes to run ``r`` and the runs
  made under it, as the run's owner) or ``pool`` (a server's own pool: any run);
- ``t``, ``e``: when it was issued and when it expires (Unix seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

PREFIX = "lr1."

Scope = Literal["user", "run", "pool"]
SCOPES: tuple[Scope, ...] = ("user", "run", "pool")


def new_secret() -> str:
    return secrets.token_hex(32)


def new_id() -> str:
    return secrets.token_hex(8)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Caller:
    """Who a request acts for, and within what: the identity every check reads."""

    user: str
    scope: Scope = "user"
    run_id: int | None = None  # a run-scoped token's run
    token_id: str | None = None  # None: Jupyter Server's own authentication
    name: str = ""
    issued: float = 0.0
    expires: float | None = None


def issue(
    secret: str,
    *,
    token_id: str,
    user: str,
    name: str,
    scope: Scope,
    issued: float,
    expires: float,
    run_id: int | None = None,
) -> str:
    claims: dict[str, Any] = {
        "i": token_id,
        "u": user,
        "n": name,
        "s": scope,
        "t": int(issued),
        "e": int(expires),
    }
    if run_id is not None:
        claims["r"] = run_id
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{PREFIX}{payload}.{_b64(signature)}"


def verify(secret: str, token: str) -> dict[str, Any] | None:
    """The token's claims when its signature is good, else None (expiry is not checked)."""
    if not token.startswith(PREFIX):
        return None
    try:
        payload, signature = token[len(PREFIX) :].split(".", 1)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) and "u" in claims else None


def caller_of(claims: dict[str, Any]) -> Caller | None:
    """The caller a verified token stands for; None for a token of an older labrun, which
    has no id, scope or expiry (and so can be neither revoked nor let expire)."""
    try:
        scope = claims["s"]
        run_id = claims.get("r")
        if scope not in SCOPES or (scope == "run") != isinstance(run_id, int):
            return None
        return Caller(
            user=str(claims["u"]),
            scope=scope,
            run_id=run_id,
            token_id=str(claims["i"]),
            name=str(claims.get("n", "")),
            issued=float(claims["t"]),
            expires=float(claims["e"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
