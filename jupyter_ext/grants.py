"""GPU ``%%mlrun`` cells and sessions under the rules jobs follow: grants.

A kernel asks its server for a grant before it sends a GPU cell (or starts a GPU session) to
the pool (``POST grants``, ``handlers/grants.py``). The grant is a row in the store
(``store/grants.py``); the scheduler of record puts a waiting one in its backlog beside the
queued jobs, and the scheduling policy chooses among both: queue priority, fair share, the
per-user GPU limits, the pool's free GPUs. A granted one holds its GPUs in the policy's view
until it is released: by the kernel when the cell ends, with the next request, or at
``%mlrun_release``; or by the scheduler of record once the run has ended or the kernel's
Dask client is gone. The kernel then submits the cell to Dask itself, as before: the server
is one round trip on a GPU cell's way, no more, and CPU cells do not ask at all.

Any server of the store takes a request: it waits for the grant's row to change, woken by
the scheduler of record's ``dispatch.granted`` event (``relay.py`` carries it across
servers) and reading the row again in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from labrun.models import DescribeGrant, GrantStatus, RequestGrant

from . import scheduling
from .scheduling import GRANT_IDS, Backlog, QueuedJob
from .store.grants import entry as grant_entry
from .store.leases import Hold, LeaseLost

if TYPE_CHECKING:
    from .dispatcher import Dispatcher

logger = logging.getLogger("labrun.dispatcher")

T = TypeVar("T")

# How often the scheduler of record releases the grants of ended runs and gone kernels.
STALE_CHECK_EVERY = 5.0


def is_grant(entry_id: int) -> bool:
    return entry_id < 0


@dataclass
class Waiter:
    """A request waiting for its grant: woken when it may have been given."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    granted_at: datetime | None = None  # set when this server gave it


class Admissions:
    """The grants of a server's dispatcher: those it gives (as the scheduler of record,
    holding their GPUs in its tally of what runs), and this server's requests waiting."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._waiting: dict[str, Waiter] = {}
        self._provisional = itertools.count(1)  # ids below every grant's, for _reserve
        # Whether a grant was asked for since the last round: a cell waits on it.
        self.asked = False
        self._checked_at = 0.0

    # --- any server: requests waiting for their grant -------------------------------

    @contextlib.contextmanager
    def waiter(self, key: str) -> Iterator[Waiter]:
        """What wakes a request for the grant ``key`` (taken before asking, so a grant
        given at once is not missed)."""
        waiter = self._waiting.setdefault(key, Waiter())
        try:
            yield waiter
        finally:
            self._waiting.pop(key, None)

    def notify(self, keys: Iterable[str], granted_at: datetime | None = None) -> list[str]:
        """Wake the requests waiting here for ``keys`` (granted at ``granted_at``, when this
        server granted them); the keys no request here waits for."""
        elsewhere = []
        for key in keys:
            waiter = self._waiting.get(key)
            if waiter is None:
                elsewhere.append(key)
                continue
            waiter.granted_at = granted_at
            waiter.event.set()
        return elsewhere

    def changed(
        self, asked: Collection[DescribeGrant] = (), released: Collection[int] = ()
    ) -> None:
        """Grants were asked for (``asked``: those waiting) or released (their ids) on this
        server: the scheduler of record takes them up (here, or told by an event)."""
        dispatcher = self.dispatcher
        if dispatcher.leading:
            self.take([grant_entry(grant) for grant in asked], released)
        elif asked or released:
            data = {"asked": [grant.id for grant in asked], "released": list(released)}
            dispatcher.publish("dispatch.grants", data, internal=True)

    async def on_event(self, type: str, data: dict[str, Any]) -> None:
        dispatcher = self.dispatcher
        if type == "dispatch.granted":  # on every server: wake the requests waiting here
            self.notify(data["keys"])
        elif type == "dispatch.grants" and dispatcher.leading:
            grants = dispatcher.store.grants
            asked = data["asked"]
            waiting = (
                await dispatcher.call(grants.entries, GrantStatus.waiting, asked) if asked else []
            )
            self.take(waiting, data["released"])

    async def request(self, body: RequestGrant, user: str) -> tuple[DescribeGrant, list[int]]:
        """Record ``user``'s request ``body``: the grant as it is then, and the ids of the
        grants it released. On the scheduler of record with nothing queued, a grant the
        policy gives now is given in the request's own transaction (no round to wait for):
        its GPUs are held from the decision on, as a round would hold them."""
        dispatcher = self.dispatcher
        grants = dispatcher.store.grants
        provisional = self._reserve(user, body.queue, body.gpus)
        released: list[int] = []
        if provisional is None and body.release and dispatcher.leading:
            # The request gives back the kernel's previous cell (back to back, its GPU is
            # the one this cell needs, under a GPU limit of one): released first, it fits.
            released = await self._first(grants.release, body.release, user)
            self.released(released)
            body = body.model_copy(update={"release": []})
            provisional = self._reserve(user, body.queue, body.gpus)
        if provisional is None:
            grant, more = await self._first(grants.request, body, user)
            return grant, released + more
        try:
            granted = dispatcher.leadership.hold or True
            grant, more = await self._first(grants.request, body, user, granted=granted)
        except LeaseLost:
            grant, more = await self._first(grants.request, body, user)
        finally:
            dispatcher.inflight.running.discard(provisional.id)
        if grant.status == GrantStatus.granted:
            self._hold(grant_entry(grant))
        return grant, released + more

    def _first(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        # A cell waits on these store calls: they go before those queued (the records
        # kernels send in the background, events, audit batches).
        return self.dispatcher.store.db.run_first(fn, *args, **kwargs)

    # --- the scheduler of record ------------------------------------------------------

    def _reserve(self, user: str, queue: str, gpus: int) -> QueuedJob | None:
        """A provisional entry holding the GPUs of a grant the policy gives now, or None
        (not the scheduler of record, something queued, or it does not fit)."""
        dispatcher = self.dispatcher
        if not dispatcher.leading or len(dispatcher.backlog) or dispatcher.client is None:
            return None
        entry = QueuedJob(GRANT_IDS - next(self._provisional), user, queue, gpus, 0, 0)
        running = dispatcher.inflight.running
        workers = ((w.nthreads, w.gpus) for w in dispatcher.pool.workers.values())
        alone = Backlog()
        alone.push(entry)
        chosen = scheduling.choose(
            alone,
            scheduling.capacity(
                workers, running, adaptive_backlog=dispatcher.settings.adaptive_backlog
            ),
            running=running,
            usage=dispatcher.usage,
            rules=dispatcher.queues,
            max_gpus_per_user=dispatcher.settings.max_gpus_per_user,
        )
        if not chosen:
            return None
        running.add(entry)  # before any await: a round meanwhile sees these GPUs taken
        return entry

    def take(self, waiting: Iterable[QueuedJob], released: Collection[int]) -> None:
        """Waiting grants join the backlog; released ones leave it, and give back their GPUs."""
        for queued in waiting:
            self.asked |= self.dispatcher.backlog.push(queued)
        self.released(released)
        if len(self.dispatcher.backlog):  # (a grant given in its request needs no round)
            self.dispatcher.wake()

    async def load(self) -> None:
        """This server took over: the waiting grants join the backlog, the granted ones
        hold their GPUs."""
        dispatcher = self.dispatcher
        grants = dispatcher.store.grants
        for entry in await dispatcher.call(grants.entries, GrantStatus.waiting):
            dispatcher.backlog.push(entry)
        for entry in await dispatcher.call(grants.entries, GrantStatus.granted):
            self._hold(entry)

    def _hold(self, entry: QueuedJob) -> None:
        # The policy's tally of what runs holds the grant's GPUs and slot, as a job's (it
        # goes with the dispatcher's jobs in flight when the server steps down).
        self.dispatcher.inflight.running.add(entry)

    def released(self, ids: Iterable[int]) -> None:
        entry_ids = {GRANT_IDS + grant_id for grant_id in ids}
        for entry_id in entry_ids:
            self.dispatcher.inflight.running.discard(entry_id)
        if entry_ids:
            self.dispatcher.backlog.discard(entry_ids)
            if len(self.dispatcher.backlog):  # a round gives the GPUs to whoever waits
                self.dispatcher.wake()

    async def admit(self, chosen: list[QueuedJob], hold: Hold | None) -> list[QueuedJob]:
        """Grant the grants among ``chosen``; the jobs among them, to submit."""
        self.asked = False
        grants = [entry for entry in chosen if is_grant(entry.id)]
        if not grants:
            return chosen
        dispatcher = self.dispatcher
        ids = [entry.id - GRANT_IDS for entry in grants]
        # (Fenced: a server that lost the lease grants nothing.)
        admitted, granted_at = await self._first(dispatcher.store.grants.admit, ids, hold)
        for entry in grants:
            if entry.id - GRANT_IDS in admitted:
                self._hold(entry)
        # The requests waiting here learn it at once; the other servers', by an event.
        elsewhere = self.notify(admitted.values(), granted_at)
        if elsewhere:
            dispatcher.publish("dispatch.granted", {"keys": elsewhere}, internal=True)
        return [entry for entry in chosen if not is_grant(entry.id)]

    async def release_stale(self) -> None:
        """Now and then: release the grants of runs that ended and of kernels gone."""
        dispatcher = self.dispatcher
        if dispatcher.client is None or time.monotonic() - self._checked_at < STALE_CHECK_EVERY:
            return
        self._checked_at = time.monotonic()
        # A lambda: pickled by value, so a team's scheduler needs no labrun installed.
        connected = await dispatcher.client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.clients)
        )
        released = await dispatcher.call(dispatcher.store.grants.release_stale, connected)
        if released:
            logger.info("labrun: released %d grants of ended cells or gone kernels", len(released))
        self.released(released)
