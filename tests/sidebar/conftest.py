from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.lab import chromium


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """These tests are synchronous and Playwright's sync API runs its own event loop across
    them; pytest-jupyter's per-test loop would try to close that one."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """No in-process Jupyter server here: JupyterLab runs as a subprocess."""
    yield None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module: Playwright's sync API drives one at a time."""
    with chromium() as context:
        yield context
