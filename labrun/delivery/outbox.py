"""Delivers records to the labrun server in the background, in order, and loses none.

Whatever reports to the server without waiting for it (the tracking API's metric points and
final status, a kernel's ``%%mlrun`` records, a worker's cell and job records) puts typed
operations into the :class:`Outbox` of its process and server. One thread sends them, in the
order they were put:

* a transient failure (the server unreachable, or a 5xx answered again after a few quick
  retries) sends the operations to a spool file, JSON lines, in order; they are sent from
  there once the server answers again, retried with a growing interval, so memory stays flat
  while the server is away and a crash loses nothing written there;
* a batch of metric points that the server refuses as bad input is split until the good
  points are stored, and each bad point is named once in a warning;
* any other refusal (the run is gone, or already finished) is logged and the operation
  dropped, as are the records of a job's attempt this process abandoned (:func:`.abandon`);
* at exit, what is still in memory goes to the spool; spool files left by processes that
  ended are sent by the next process that opens an outbox for the same server.

Operations name their run by id, or by the key its creator chose (a worker records a cell
whose run the kernel creates), which the outbox resolves when it sends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from labrun import client as _client
from labrun import settings
from labrun.client import Client
from labrun.errors import (
    Conflict,
    InvalidRequest,
    LabrunError,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServerUnavailable,
    Unauthorized,
)
from labrun.models import MOST_PER_BATCH

from .ops import (
    CreateReportOp,
    CreateRunOp,
    Item,
    MetricsOp,
    RunTarget,
    UpdateRunsOp,
    abandoned,
    describe_target,
    joinable,
    split_points,
)
from .spool import Spool

log = logging.getLogger("labrun")


class _Transient(Exception):
    """The server cannot take this now; the operation waits in the spool."""


@dataclass
class _Entry:
    seq: int
    item: Item
    put_at: float
    on_sent: Callable[[Any], None] | None = None


class Outbox:
    """The ordered background delivery of one process to one server (see the module doc).

    Get it with :meth:`of`; every part of the process that talks to that server as that
    user shares it, so their records keep their order.
    """

    _all: ClassVar[dict[tuple[str, str], Outbox]] = {}
    _all_lock = threading.Lock()

    # A 5xx is retried at once this many times (after these pauses) before the operation
    # waits in the spool.
    SERVER_ERROR_PAUSES = (0.2, 1.0)
    # While the server is away, the spool is tried again after this long, doubling.
    RETRY_FIRST, RETRY_MAX = 1.0, 30.0
    # How long an operation about a run named by key waits for that run to be created.
    RESOLVE_TIMEOUT = 30.0

    def __init__(self, client: Client, *, spool_dir: Path | None = None) -> None:
        # A connection of its own: the caller may close theirs while records still wait.
        self.client = Client(client.url, client.token, renew=client.renew, relocate=client.relocate)
        self.spool = Spool(spool_dir or settings.spool_dir(), self.client)
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._seq = 0
        self._done = 0  # every entry up to this seq has been sent (or given up)
        self._offline_since: float | None = None
        self._retry_at = 0.0
        self._retry_delay = self.RETRY_FIRST
        self._ids: dict[str, int] = {}
        self._sources: list[Callable[[], Sequence[BaseModel]]] = []
        self.refused: dict[int | str, int] = {}
        # Decides how long an item put at the given time waits before it is sent (a kernel
        # holds its records while a cell's round trip is in flight).
        self.hold: Callable[[float], float] | None = None
        self.interval = 0.5
        self._closing = False
        self._orphans_due = True
        # The entry being sent, and its operations not sent yet (None while it makes them).
        self._current: _Entry | None = None
        self._in_flight: list[BaseModel] | None = None
        self._thread = threading.Thread(target=self._loop, name="labrun-outbox", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, client: Client) -> Outbox:
        """The outbox of this process for ``client``'s server and token."""
        key = (client.url, client.token)
        with cls._all_lock:
            outbox = cls._all.get(key)
            if outbox is None or outbox._closing:
                outbox = cls._all[key] = cls(client)
            return outbox

    @classmethod
    def open_ones(cls) -> list[Outbox]:
        """Every outbox of this process that is not closed."""
        with cls._all_lock:
            return [outbox for outbox in cls._all.values() if not outbox._closing]

    @classmethod
    def renew_token(cls, url: str, old: str, new: str) -> None:
        """The outbox of ``old`` sends with ``new`` from now on (a renewed pool token)."""
        with cls._all_lock:
            outbox = cls._all.pop((url, old), None)
        if outbox is None:
            return
        outbox.client.set_token(new)  # its own client: this comes back here, finding none
        with cls._all_lock:
            cls._all.setdefault((url, new), outbox)

    # --- putting ------------------------------------------------------------------

    def put(self, item: Item, on_sent: Callable[[Any], None] | None = None) -> int:
        """Queue an operation (or a function making some); its number, for :meth:`flush`.

        ``on_sent`` gets the server's answer to a sent operation (a created run).
        """
        with self._cond:
            self._seq += 1
            self._queue.append(_Entry(self._seq, item, time.monotonic(), on_sent))
            self._cond.notify_all()
            return self._seq

    def add_source(self, source: Callable[[], Sequence[BaseModel]]) -> None:
        """A producer polled every ``interval`` for operations (a run's metric buffer).

        A new run is also when records left by ended processes are looked for again.
        """
        with self._cond:
            self._sources.append(source)
            self._orphans_due = True
            self._cond.notify_all()

    def remove_source(self, source: Callable[[], Sequence[BaseModel]]) -> None:
        with self._cond:
            if source in self._sources:
                self._sources.remove(source)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- waiting ------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        return self._offline_since is not None

    def flush(self, timeout: float | None = 30.0, *, seq: int | None = None) -> bool:
        """Wait until everything put so far (or up to ``seq``) has reached the server.

        False when ``timeout`` ran out first: what is left waits in memory or in the spool.
        While waiting, a server that was away is tried again every second.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._collect()  # what the sources hold counts as put
            target = self._seq if seq is None else seq
            while self._done < target or self.spool.pending():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if self.offline:
                    self._retry_at = min(self._retry_at, time.monotonic() + 1.0)
                    self._cond.notify_all()
                self._cond.wait(min(1.0, left) if left is not None else 1.0)
        return True

    def known_id(self, key: str) -> int | None:
        return self._ids.get(key)

    def resolve(
        self, key: str, timeout: float | None = None, client: Client | None = None
    ) -> int | None:
        """The id of the run created with ``key``, waiting up to ``timeout`` for it to exist."""
        deadline = time.monotonic() + (self.RESOLVE_TIMEOUT if timeout is None else timeout)
        delay = 0.01
        while True:
            found = self._ids.get(key)
            if found is not None:
                return found
            try:
                runs = (client or self.client).list_runs(key=key, limit=1).runs
            except LabrunError as err:
                log.info("labrun: looking for the run with key %s: %s", key, err)
                runs = []
            if runs:
                self._ids[key] = runs[0].id
                return runs[0].id
            if time.monotonic() > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # --- closing --------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> int:
        """Send what is left for up to ``timeout`` s, then keep the rest in the spool.

        Returns the number of operations left in the spool.
        """
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        # The thread is gone, or stuck in a request: what is still queued goes to disk, the
        # operation it is sending too (sent twice, it is stored once: a run is created by
        # its key, points by their batch id, a status set twice is set once).
        with self._cond:
            left, self._queue = list(self._queue), deque()
        current, in_flight = self._current, self._in_flight
        ops: list[BaseModel] = []
        if current is not None:  # being made (None) or sent (the ops not sent yet)
            ops = list(in_flight) if in_flight is not None else self._materialize(current)
        ops += [op for entry in left for op in self._materialize(entry)]
        ops += [op for source in self._sources for op in source()]
        if ops:
            self.spool.append(ops)
        if not self._thread.is_alive():
            self.client.close()
        return len(self.spool.read()) if self.spool.pending() else 0

    # --- the thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            if self._orphans_due:
                self._orphans_due = False
                self._send_orphans()
            entry = self._next()
            if entry is None:
                return
            try:
                if self.spool.pending() and not self._drain_spool():
                    self._to_spool(entry)
                    continue
                self._current, self._in_flight = entry, None
                self._in_flight = self._materialize(entry)
                while self._in_flight and not self._closing:
                    op = self._in_flight[0]
                    if self.spool.pending():  # an earlier op of this entry went there
                        self.spool.append([op])
                    else:
                        try:
                            answer = self._deliver(self.client, op)
                        except _Transient:
                            self.spool.append([op])
                        else:
                            if entry.on_sent is not None and answer is not None:
                                entry.on_sent(answer)
                    self._in_flight = self._in_flight[1:]
            except Exception:  # the outbox must never die: log, drop, go on
                log.exception("labrun: sending a record to the server failed; it is dropped")
            if not self._closing:
                self._current = None
            self._finished(entry.seq)

    def _next(self) -> _Entry | None:
        """The next entry to send, once its hold is over; None when closing."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                if self._orphans_due:
                    # An empty entry, numbered 0 so that it never counts as progress: the
                    # loop looks for orphans first.
                    return _Entry(0, list, time.monotonic())
                self._collect()
                if self._queue:
                    entry = self._queue[0]
                    wait = self.hold(entry.put_at) if self.hold is not None else 0.0
                    if wait <= 0:
                        return self._joined(self._queue.popleft())
                else:
                    wait = self.interval if self._sources else 5.0
                if self.offline and self.spool.pending():
                    wait = min(wait, max(0.0, self._retry_at - time.monotonic()))
                    if wait <= 0 and not self._queue:
                        # Nothing new, but the spool is due another try.
                        return _Entry(0, list, time.monotonic())
                self._cond.wait(wait)

    def _joined(self, entry: _Entry) -> _Entry:
        """``entry``; when it is a run's update, with the updates queued right after it, as
        one ``POST runs/updates`` (the caller holds the lock)."""
        if not joinable(entry.item, entry.on_sent):
            return entry
        ops = [entry.item]
        while self._queue and len(ops) < MOST_PER_BATCH:
            after = self._queue[0]
            if not joinable(after.item, after.on_sent):
                break
            if self.hold is not None and self.hold(after.put_at) > 0:
                break
            entry = self._queue.popleft()
            ops.append(entry.item)
        # Numbered as the last: once it is sent, every update it holds counts as sent.
        return _Entry(entry.seq, UpdateRunsOp(ops=ops), entry.put_at)

    def _collect(self) -> None:
        """Queue what the sources hold (the caller holds the lock)."""
        for source in list(self._sources):
            for op in source():
                self._seq += 1
                self._queue.append(_Entry(self._seq, op, time.monotonic()))

    def _finished(self, seq: int) -> None:
        with self._cond:
            self._done = max(self._done, seq)
            self._cond.notify_all()

    def _materialize(self, entry: _Entry) -> list[BaseModel]:
        if isinstance(entry.item, BaseModel):
            return [entry.item]
        return list(entry.item())

    def _to_spool(self, entry: _Entry) -> None:
        ops = self._materialize(entry)
        if ops:
            self.spool.append(ops)
        self._finished(entry.seq)

    def _drain_spool(self, spool: Spool | None = None) -> bool:
        """Send the spooled operations in order; False while the server is still away."""
        spool = spool or self.spool
        if spool is self.spool and self.offline and time.monotonic() < self._retry_at:
            return False
        ops = spool.read()
        for i, op in enumerate(ops):
            try:
                self._deliver(spool.client, op)
            except _Transient:
                spool.sent(i)
                return False
        spool.sent(len(ops))
        if spool is self.spool and self._offline_since is not None:
            log.info(
                "labrun: the server at %s answers again; the waiting records were sent",
                self.client.url,
            )
            self._offline_since = None
            self._retry_delay = self.RETRY_FIRST
        return True

    def _transient(self, client: Client) -> _Transient:
        if client is self.client:
            self._went_offline()
        return _Transient()

    def _went_offline(self) -> None:
        if self._offline_since is None:
            self._offline_since = time.monotonic()
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.RETRY_MAX)

    def _send_orphans(self) -> None:
        for spool in Spool.orphans(self.spool.directory):
            try:
                if not self._drain_spool(spool):
                    log.info("labrun: records left by an ended process wait in %s", spool.path)
            except Exception:  # one bad file must not stop this process's records
                log.exception("labrun: could not send the records in %s", spool.path)

    # --- sending one operation -----------------------------------------------------------

    def _deliver(self, client: Client, op: BaseModel) -> Any:
        """Send one operation: its answer, None when it was given up, or _Transient."""
        if (attempt := abandoned(op)) is not None:
            log.info("labrun: %s's attempt %d was abandoned here", describe_target(op), attempt)
            return None
        pauses = iter(self.SERVER_ERROR_PAUSES)
        while True:
            try:
                return self._send(client, op)
            except ServerUnavailable as err:
                if client is self.client and self._offline_since is None:
                    log.warning(
                        "labrun: %s; records wait in %s until it answers",
                        err.message,
                        self.spool.path,
                    )
                raise self._transient(client) from err
            except ServerError as err:
                pause = next(pauses, None)
                if pause is None:
                    log.warning(
                        "labrun: the server failed on a record of %s: %s",
                        describe_target(op),
                        err.message,
                    )
                    raise self._transient(client) from err
                time.sleep(pause)
            except Unauthorized as err:
                log.warning(
                    "labrun: the server refused the token for a record of %s, which is dropped: %s",
                    describe_target(op),
                    err.message,
                )
                return None
            except (NotFound, Conflict) as err:
                # The run is gone, or finished meanwhile (cancelled, settled): nothing to add.
                log.info(
                    "labrun: a record of %s was not needed: %s", describe_target(op), err.message
                )
                return None
            except (InvalidRequest, PayloadTooLarge) as err:
                if isinstance(op, MetricsOp):
                    try:
                        self._split(client, op, err)
                    except (ServerUnavailable, ServerError) as again:
                        # Sent again whole later: the halves stored by now are recognised by
                        # their batch ids, which the split derives from the batch's.
                        raise self._transient(client) from again
                elif isinstance(op, UpdateRunsOp):  # too large together: each alone
                    for update in op.ops:
                        self._deliver(client, update)
                else:
                    log.warning(
                        "labrun: the server refused a record of %s: %s",
                        describe_target(op),
                        err.message,
                    )
                return None

    def _send(self, client: Client, op: BaseModel) -> Any:
        if isinstance(op, RunTarget):
            run_id = op.run_id
            if run_id is None:
                assert op.run_key is not None
                run_id = self.resolve(op.run_key, client=client)
                if run_id is None:
                    raise NotFound(f"no run was created with key {op.run_key}")
            return op.send_to(client, run_id)
        if isinstance(op, UpdateRunsOp):
            return op.send(client)
        assert isinstance(op, CreateRunOp | CreateReportOp)
        answer = op.send(client)
        if isinstance(op, CreateRunOp) and op.body.key:
            self._ids[op.body.key] = answer.id
        return answer

    def _split(self, client: Client, op: MetricsOp, err: LabrunError) -> None:
        """Store the good points of a refused batch; name the bad ones once."""
        bad = split_points(lambda half: self._send(client, half), op, err)
        target = op.run_id if op.run_id is not None else op.run_key or "?"
        self.refused[target] = self.refused.get(target, 0) + len(bad)
        shown = "; ".join(f"{key!r} step {step}: {why}" for (key, _, step, _), why in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        log.warning(
            "labrun: the server refused %d metric point%s of %s, which are not stored: %s%s",
            len(bad),
            "s" * (len(bad) != 1),
            op.describe(),
            shown,
            more,
        )


_client.TOKEN_RENEWED.append(Outbox.renew_token)
