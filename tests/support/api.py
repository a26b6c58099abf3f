from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# The `api` fixture's type: ``await api("POST", "runs", body={...}, status=201)``.
Api = Callable[..., Awaitable[Any]]

# The `mint` fixture's type: a token signed with the server's secret,
# ``mint("bob")``, ``mint("alice", scope="run", run_id=3)``.
Mint = Callable[..., str]


def bearer(token: str) -> dict[str, str]:
    """The header that sends ``token``."""
    return {"Authorization": f"token {token}"}
