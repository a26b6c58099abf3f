"""The threads that run store calls: in the order they come, but for urgent ones.

SQLite has one such thread (one writer: calls queue in memory rather than fight over the
file lock), so a call waits for every call queued before it. Most can: a record a kernel
sends in the background, an event batch, an audit batch. A few have a person waiting on
the far side (a GPU cell's grant: the cell does not start before it): they are *urgent*
and go before every call still queued (not before one already running).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

URGENT, QUEUED, STOP = 0, 1, 2


class StoreThreads:
    """``threads`` threads that run calls by urgency, then in order (started at the first)."""

    def __init__(self, threads: int, name: str) -> None:
        self._count = threads
        self._name = name
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, call: Callable[[], T], *, urgent: bool = False) -> Future[T]:
        if self._stopped:
            raise RuntimeError("the store's threads are stopped (the database was closed)")
        future: Future[T] = Future()
        self._start()
        self._queue.put((URGENT if urgent else QUEUED, next(self._order), (future, call)))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._lock:
            self._stopped = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put((STOP, next(self._order), None))
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            while len(self._threads) < self._count:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # (cancelled while queued: its caller is gone)
            try:
                result = call()
            except BaseException as err:  # noqa: BLE001 - the caller gets it, as from an executor
                future.set_exception(err)
            else:
                future.set_result(result)
            del item, future, call
