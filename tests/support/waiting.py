"""The one way tests wait: poll a condition until it holds, with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 60,
    what: str = "condition",
    *,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
    gone: Callable[[], str | None] | None = None,
    context: Callable[[], str] | None = None,
) -> object:
    """``predicate()`` until it returns something true, which is returned.

    Args:
        retry_on: exceptions of ``predicate`` that mean "not yet" (a server not listening yet).
        gone: says why waiting is pointless (the process that should get ready exited), or
            None; its message ends the wait with a RuntimeError.
        context: what to add to a failure (a log's tail).

    Raises:
        TimeoutError: ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone is not None and (why := gone()):
            raise RuntimeError(f"{why}{_said(context)}")
        try:
            value = predicate()
        except retry_on:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{_said(context)}")


def _said(context: Callable[[], str] | None) -> str:
    return f": {context()}" if context is not None else ""
