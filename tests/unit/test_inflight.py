"""The dispatcher's jobs in flight: the policy's tally of them stays the jobs in the map,
however they come and go, and a job's end counts in fair share at once."""

from __future__ import annotations

import time

from labrun.jupyter_ext.inflight import Inflight, InflightJobs, count_usage
from labrun.jupyter_ext.scheduling import QueuedJob, Running


def entry(run_id: int, user: str = "alice", gpus: int = 0) -> Inflight:
    return Inflight(job=QueuedJob(run_id, user, "default", gpus, 0, 0), attempt=1)


def same(tally: Running, jobs: list[QueuedJob]) -> bool:
    fresh = Running(jobs)
    return sorted(j.id for j in tally) == sorted(j.id for j in jobs) and (
        tally.gpus,
        tally.held,
        tally.slots,
    ) == (fresh.gpus, fresh.held, fresh.slots)


def test_the_tally_is_the_jobs_in_flight_across_start_end_loss_cancel_and_step_down() -> None:
    def check() -> None:
        assert same(inflight.running, [e.job for e in inflight.values()])

    # Adopted from the store by a server taking over
    inflight = InflightJobs([entry(1, "alice", 2), entry(2, "bob")])
    check()
    # slots reserved in a round, one of them again (no double count)
    inflight[3] = entry(3, "alice", 1)
    inflight[4] = entry(4, "carol", 4)
    inflight[4] = inflight[4]
    check()
    assert inflight.running.gpus == 7 and inflight.running.held["alice"] == 3
    # a job whose entry is replaced by another attempt's: counted once, as the new one
    inflight[2] = entry(2, "bob", 1)
    check()
    # one ended, one lost (popped), one cancelled before its submission (pop of a missing
    # id leaves the tally alone)
    del inflight[1]
    assert inflight.pop(3).job.id == 3
    assert inflight.pop(99, None) is None
    check()
    assert set(inflight) == {2, 4} and 2 in inflight and 1 not in inflight
    # a user's CPU jobs ending one after the other
    inflight[5], inflight[6] = entry(5, "dave"), entry(6, "dave")
    del inflight[5]
    del inflight[6]
    check()
    # stepping down: a new, empty map
    inflight = InflightJobs()
    check()
    assert len(inflight.running) == 0


def test_an_ended_job_adds_its_slot_hours_after_the_last_read() -> None:
    usage = {"alice": 1.0}
    now = time.monotonic()
    # A 2-GPU job that held its slot for an hour, usage read from the store 30 minutes ago
    # (which counted it running up to then): only the last half hour is new.
    job = entry(1, "alice", 2)
    job.started = now - 3600
    count_usage(usage, job, since=now - 1800)
    assert abs(usage["alice"] - 2.0) < 0.01
    # A CPU job of bob's that started after the read counts as one slot, from its start.
    job = entry(2, "bob", 0)
    job.started = now - 360
    count_usage(usage, job, since=now - 1800)
    assert abs(usage["bob"] - 0.1) < 0.01
