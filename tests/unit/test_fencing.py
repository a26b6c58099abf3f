"""A worker's fence: when a worker cut off from the server gives its jobs up, and takes work
again (executor.fencing). Times are given, not waited for."""

from __future__ import annotations

from labrun.delivery import AppendLogsOp, UpdateRunOp, abandon
from labrun.delivery.ops import abandoned
from labrun.executor.fencing import Fence, fence_after
from labrun.jupyter_ext.dispatcher import LOST_GRACE
from labrun.models import LogEntryIn, UpdateRun


def test_the_fence_comes_well_before_the_server_loses_the_jobs() -> None:
    for timeout in (9.0, 30.0, 300.0):
        after = fence_after(timeout)
        # At least two heartbeats (one each 2 s) missed, and a third of the timeout (plus the
        # server's grace) left for the fence to act.
        assert 2 * 2.0 < after <= timeout * 2 / 3
        assert timeout + LOST_GRACE - after >= timeout / 3 + LOST_GRACE


def test_the_fence_fires_once_per_cut_and_lifts_when_a_heartbeat_gets_through() -> None:
    fence = Fence(6.0, now=100.0)
    assert not fence.check(106.0)  # at the fence time: not yet
    assert fence.reached(sent=104.0, now=104.5) is False  # not fenced: nothing to lift
    assert not fence.check(110.0)  # counted from the last heartbeat sent that got through
    assert fence.check(110.1) and fence.fenced
    assert not fence.check(120.0)  # once per cut: the jobs were stopped already
    assert fence.silence(120.0) == 16.0
    # An answer to a heartbeat sent before the silence passed the fence time does not lift
    # it: that would fence the worker again at once.
    assert fence.reached(sent=105.0, now=121.0) is False and fence.fenced
    assert fence.reached(sent=119.0, now=121.0) is True and not fence.fenced
    assert not fence.check(125.0)
    assert fence.check(125.5)  # the next cut


def test_an_abandoned_attempts_records_are_dropped_and_the_next_attempts_sent() -> None:
    entries = [LogEntryIn(stream="stdout", text="late\n")]
    abandon(9001, 1)
    assert abandoned(AppendLogsOp(run_id=9001, entries=entries, attempt=1)) == 1
    assert abandoned(UpdateRunOp(run_id=9001, body=UpdateRun(attempt=1))) == 1
    assert abandoned(AppendLogsOp(run_id=9001, entries=entries, attempt=2)) is None
    assert abandoned(UpdateRunOp(run_id=9001, body=UpdateRun())) is None
    assert abandoned(AppendLogsOp(run_id=9002, entries=entries, attempt=1)) is None
