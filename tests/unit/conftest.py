"""The fast tier (`make test-fast`): pure logic, in seconds.

A test here starts no server, kernel, Dask pool, database or browser; one that asks for a
fixture that does is refused at collection, so the tier stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
STARTS_SOMETHING = frozenset(
    {
        "api",
        "browser",
        "client",
        "db_url",
        "jp_fetch",
        "jp_serverapp",
        "jp_ws_fetch",
        "kernel",
        "lab",
        "labrun_server",
        "page",
        "pool_server",
        "postgres",
        "store",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        heavy = sorted(STARTS_SOMETHING & set(getattr(item, "fixturenames", ())))
        if heavy:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(heavy)}: tests/unit is the fast tier, for "
                "pure logic; put it beside the tests of its part instead"
            )
