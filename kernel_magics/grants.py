"""A kernel's GPU grants: a GPU cell or session asks the pool's scheduler of record first.

The scheduler of record gives GPUs to cells and sessions under the rules jobs follow
(queues, fair share, per-user GPU limits), one request on the cell's way (``POST grants``,
answered once granted). A cell's grant goes back when the cell ends: with the next GPU
cell's request when that follows at once (cells run back to back: one request on the
server instead of two, and no release competing with the next grant), else on a thread
within :data:`CARRY` seconds; again with the next request if that did not get through. The
server releases it in any case once the cell's run has ended or this kernel is gone.
"""

from __future__ import annotations

import threading
from typing import Literal

from labrun.client import Client
from labrun.errors import LabrunError
from labrun.models import GrantStatus, RequestGrant

# Seconds one request waits for its grant before the kernel asks again (the server holds
# the request meanwhile, and answers as soon as the grant is given).
WAIT = 5.0
# Seconds an ended cell's grant waits for the next GPU cell's request to carry it back,
# before a request of its own does (a session's goes back at once).
CARRY = 0.03


class KernelGrants:
    """This kernel's grants: asked for, and given back."""

    def __init__(self, client: Client, pool_client: str, *, carry: float = CARRY) -> None:
        self.client = client
        self.pool_client = pool_client
        self.carry = carry
        self._lock = threading.Lock()
        self._ended: set[str] = set()
        self._carried: set[str] = set()  # on their way back in a request now

    def acquire(
        self, key: str, gpus: int, *, kind: Literal["cell", "session"], queue: str | None, what: str
    ) -> None:
        """Wait until the scheduler of record grants ``gpus`` GPUs to ``what`` (run key
        ``key``); interrupting the wait gives the request up."""
        announced = False
        try:
            while True:
                ended = self._carry()
                try:
                    grant = self.client.request_grant(
                        RequestGrant(
                            key=key,
                            gpus=gpus,
                            kind=kind,
                            queue=queue or "default",
                            client=self.pool_client,
                            release=ended,
                            wait=WAIT,
                        )
                    )
                except BaseException:
                    self._carried_back(ended, released=False)
                    raise
                self._carried_back(ended, released=True)
                if grant.status == GrantStatus.granted:
                    return
                if grant.status == GrantStatus.released:
                    raise LabrunError(
                        f"the GPUs asked for {what} were given up before they were granted "
                        "(released by an admin, or this kernel's pool connection dropped); "
                        "run the cell again"
                    )
                if not announced:
                    print(
                        f"labrun: {what} waits for {gpus} GPU(s) in queue "
                        f"{queue or 'default'!r}: the pool's free GPUs or your GPU limit are "
                        "taken (`labrun pool` shows who holds them); interrupt to stop waiting",
                        flush=True,
                    )
                    announced = True
        except BaseException:
            self.release(key, at_once=True)
            raise

    def release(self, key: str, *, at_once: bool = False) -> None:
        """``key``'s cell or session ended: its GPUs go back, off the caller's path (a
        cell's with the next GPU cell's request, if that comes within ``carry``)."""
        with self._lock:
            self._ended.add(key)
        timer = threading.Timer(0.0 if at_once else self.carry, self.flush)
        timer.name = "labrun-grants"
        timer.daemon = True
        timer.start()

    def flush(self) -> None:
        """Give back the grants of ended cells that no request carries (kept for the next
        request on failure)."""
        with self._lock:
            keys = sorted(self._ended - self._carried)
        if not keys:
            return
        try:
            self.client.release_grants(keys)
        except LabrunError:
            return  # the next request carries them; the server's own sweep releases them
        with self._lock:
            self._ended.difference_update(keys)

    def _carry(self) -> list[str]:
        """The ended grants a request now takes back."""
        with self._lock:
            ended = sorted(self._ended)
            self._carried.update(ended)
        return ended

    def _carried_back(self, keys: list[str], *, released: bool) -> None:
        """A request that carried ``keys`` was answered (the server released them in its
        transaction) or failed (they wait for a flush, or the next request)."""
        with self._lock:
            self._carried.difference_update(keys)
            if released:
                self._ended.difference_update(keys)
