from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# The `api` fixture's type: ``await api("POST", "runs", body={...}, status=201)``.
Api = Callable[..., Awaitable[Any]]
