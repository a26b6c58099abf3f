"""A kernel's GPU grants: a GPU cell or session asks the pool's scheduler of record first.

The scheduler of record gives GPUs to cells and sessions under the rules jobs follow
(queues, fair share, per-user GPU limits), one request on the cell's way (``POST grants``,
answered once granted). A cell's grant goes back when the cell ends: on a thread, off the
cell's path, and again with the next request if that did not get through; the server
releases it in any case once the cell's run has ended or this kernel is gone.
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


class KernelGrants:
    """This kernel's grants: asked for, and given back."""

    def __init__(self, client: Client, pool_client: str) -> None:
        self.client = client
        self.pool_client = pool_client
        self._lock = threading.Lock()
        self._ended: set[str] = set()

    def acquire(
        self, key: str, gpus: int, *, kind: Literal["cell", "session"], queue: str | None, what: str
    ) -> None:
        """Wait until the scheduler of record grants ``gpus`` GPUs to ``what`` (run key
        ``key``); interrupting the wait gives the request up."""
        announced = False
        try:
            while True:
                with self._lock:
                    ended = sorted(self._ended)
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
                with self._lock:
                    self._ended.difference_update(ended)
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
            self.release(key)
            raise

    def release(self, key: str) -> None:
        """``key``'s cell or session ended: its GPUs go back now, off the caller's path."""
        with self._lock:
            self._ended.add(key)
        threading.Thread(target=self.flush, name="labrun-grants", daemon=True).start()

    def flush(self) -> None:
        """Give back the grants of ended cells (kept for the next request on failure)."""
        with self._lock:
            keys = sorted(self._ended)
        if not keys:
            return
        try:
            self.client.release_grants(keys)
        except LabrunError:
            return  # the next request carries them; the server's own sweep releases them
        with self._lock:
            self._ended.difference_update(keys)
