"""Tokens the server issues to workers and kernels.

A token is ``lr1.<payload>.<signature>``: the payload names the user it acts for, and the
HMAC signature uses a secret kept in the database, so every server sharing that database
accepts it and checking one costs no query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

PREFIX = "lr1."


def new_secret() -> str:
    return secrets.token_hex(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: str, *, user: str, name: str, kind: str) -> str:
    payload = _b64(json.dumps({"u": user, "n": name, "k": kind, "t": int(time.time())}).encode())
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{PREFIX}{payload}.{_b64(signature)}"


def verify(secret: str, token: str) -> dict[str, str] | None:
    """The token's claims when its signature is good, else None."""
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
