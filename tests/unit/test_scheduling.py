"""The scheduling policy, one rule at a time: plain data in, the jobs that start out."""

from __future__ import annotations

import itertools

import pytest

from labrun.jupyter_ext.scheduling import (
    GRANT_IDS,
    RUNNING_FLOOR_HOURS,
    UNLIMITED,
    Backlog,
    Capacity,
    QueuedJob,
    QueueRule,
    Running,
    capacity,
    choose,
    queue_order,
    user_limit,
)

_ids = itertools.count(1)


def job(user: str = "alice", queue: str = "default", gpus: int = 0, priority: int = 0) -> QueuedJob:
    """A queued job, younger than every job made before it."""
    return QueuedJob(id=next(_ids), user=user, queue=queue, gpus=gpus, priority=priority, attempt=0)


def backlog_of(*jobs: QueuedJob) -> Backlog:
    backlog = Backlog()
    for queued in jobs:
        backlog.push(queued)
    return backlog


def cpus(slots: int) -> Capacity:
    return Capacity(slots=slots, free_gpus=0, biggest=0)


# --- queues by priority ---------------------------------------------------------------


def test_a_higher_priority_queue_goes_first_however_old_the_other_jobs() -> None:
    old = job(queue="batch")
    urgent = job(queue="urgent")
    rules = {"urgent": QueueRule(priority=10), "batch": QueueRule(priority=1)}
    assert choose(backlog_of(old, urgent), cpus(1), rules=rules) == [urgent]


def test_a_lower_queue_starts_a_job_when_no_job_of_a_higher_one_fits() -> None:
    big = job(queue="urgent", gpus=4)
    small = job(queue="batch", gpus=1)
    rules = {"urgent": QueueRule(priority=10)}
    free = Capacity(slots=2, free_gpus=2, biggest=2)
    assert choose(backlog_of(big, small), free, rules=rules) == [small]


def test_queues_of_equal_priority_go_by_name_and_unknown_queues_weigh_zero() -> None:
    rules = {"b": QueueRule(priority=1), "a": QueueRule(priority=1), "c": QueueRule(priority=-1)}
    assert queue_order(["c", "unset", "b", "a"], rules) == ["a", "b", "unset", "c"]


# --- fair share inside a queue --------------------------------------------------------


def test_the_user_with_fewer_slot_hours_goes_next() -> None:
    alices, bobs = job("alice"), job("bob")
    chosen = choose(backlog_of(alices, bobs), cpus(1), usage={"alice": 2.0, "bob": 0.5})
    assert chosen == [bobs]


def test_two_users_with_fresh_jobs_alternate() -> None:
    a1, a2, a3 = job("alice"), job("alice"), job("alice")
    b1, b2 = job("bob"), job("bob")
    chosen = choose(backlog_of(a1, a2, a3, b1, b2), cpus(5))
    assert chosen == [a1, b1, a2, b2, a3]


def test_a_running_job_counts_at_least_a_minute_of_its_gpus() -> None:
    # alice has used a little less than bob, but her running 2-GPU job weighs 2 minutes more
    usage = {"alice": 1.0, "bob": 1.0 + RUNNING_FLOOR_HOURS}
    running = [job("alice", gpus=2)]
    alices, bobs = job("alice"), job("bob")
    chosen = choose(backlog_of(alices, bobs), cpus(1), running=running, usage=usage)
    assert chosen == [bobs]


def test_at_equal_weight_the_older_job_goes_first() -> None:
    bobs, alices = job("bob"), job("alice")
    assert choose(backlog_of(alices, bobs), cpus(1)) == [bobs]


# --- a user's own jobs by job priority ------------------------------------------------


def test_a_users_higher_priority_job_starts_before_their_older_ones() -> None:
    old, older = job("alice"), job("alice")
    urgent = job("alice", priority=5)
    assert choose(backlog_of(old, older, urgent), cpus(3)) == [urgent, old, older]


def test_a_jobs_priority_never_overtakes_another_users_job() -> None:
    # Fair share decides between users: bob's priority only orders bob's own jobs
    alices = job("alice")
    bobs_low, bobs_high = job("bob"), job("bob", priority=100)
    chosen = choose(backlog_of(alices, bobs_low, bobs_high), cpus(1), usage={"bob": 1.0})
    assert chosen == [alices]
    assert choose(backlog_of(bobs_low, bobs_high), cpus(1)) == [bobs_high]


def test_a_users_waiting_gpu_cell_goes_before_their_queued_jobs_not_before_others() -> None:
    # A grant (a GPU cell waiting) is a job of its user under an id below every run's
    cell = QueuedJob(GRANT_IDS + 1, "alice", "default", 1, 0, 0)
    alices, bobs = job("alice", gpus=1), job("bob", gpus=1)
    free = Capacity(slots=1, free_gpus=1, biggest=1)
    assert choose(backlog_of(alices, cell), free) == [cell]
    # fair share still decides between users
    assert choose(backlog_of(alices, cell, bobs), free, usage={"alice": 1.0}) == [bobs]


# --- per-user GPU limits --------------------------------------------------------------


def test_the_server_limit_caps_the_gpus_a_user_holds() -> None:
    running = [job("alice", gpus=1)]
    alices, bobs = job("alice", gpus=1), job("bob", gpus=1)
    free = Capacity(slots=4, free_gpus=4, biggest=4)
    chosen = choose(backlog_of(alices, bobs), free, running=running, max_gpus_per_user=1)
    assert chosen == [bobs]


def test_cpu_jobs_are_not_held_back_by_a_gpu_limit() -> None:
    running = [job("alice", gpus=1)]
    cpu = job("alice")
    free = Capacity(slots=1, free_gpus=4, biggest=4)
    assert choose(backlog_of(cpu), free, running=running, max_gpus_per_user=1) == [cpu]


@pytest.mark.parametrize(
    ("server", "queue", "limit"),
    [(0, None, 0), (2, None, 2), (0, 3, 3), (2, 3, 2), (4, 1, 1), (0, 0, 0)],
)
def test_a_users_limit_is_the_lower_of_the_servers_and_the_queues(
    server: int, queue: int | None, limit: int
) -> None:
    rules = {"q": QueueRule(max_gpus_per_user=queue)}
    assert user_limit("q", rules, server) == limit


def test_a_queues_limit_holds_in_that_queue_only() -> None:
    rules = {"small": QueueRule(max_gpus_per_user=1)}
    running = [job("alice", queue="small", gpus=1)]
    in_small, in_default = job("alice", queue="small", gpus=1), job("alice", gpus=1)
    free = Capacity(slots=2, free_gpus=4, biggest=4)
    chosen = choose(backlog_of(in_small, in_default), free, running=running, rules=rules)
    assert chosen == [in_default]


# --- what fits the pool ---------------------------------------------------------------


def test_capacity_is_the_workers_threads_and_gpus_less_what_runs() -> None:
    running = [job(gpus=1), job()]
    assert capacity([(2, 2), (4, 0), (1, 1)], running) == Capacity(slots=5, free_gpus=2, biggest=2)


def test_an_adaptive_pool_takes_more_jobs_than_its_workers_and_any_gpus() -> None:
    free = capacity([(1, 0)], [], adaptive_backlog=3)
    assert free == Capacity(slots=4, free_gpus=UNLIMITED, biggest=UNLIMITED)


def test_no_more_jobs_start_than_there_are_slots() -> None:
    jobs = [job() for _ in range(5)]
    assert choose(backlog_of(*jobs), cpus(2)) == jobs[:2]
    assert choose(backlog_of(*jobs), cpus(0)) == []


def test_a_job_needing_more_gpus_than_any_one_worker_waits_though_enough_are_free() -> None:
    # Two workers with two GPUs each: four are free, but no worker can give one job three
    wide, narrow = job("alice", gpus=3), job("bob", gpus=2)
    free = capacity([(1, 2), (1, 2)], [])
    assert choose(backlog_of(wide, narrow), free) == [narrow]


def test_gpus_taken_this_round_are_not_free_for_the_next_pick() -> None:
    first, second = job("alice", gpus=2), job("bob", gpus=2)
    free = Capacity(slots=2, free_gpus=3, biggest=4)
    assert choose(backlog_of(first, second), free) == [first]


# --- the backlog ----------------------------------------------------------------------


def test_chosen_jobs_leave_the_backlog_and_the_others_stay() -> None:
    jobs = [job() for _ in range(3)]
    backlog = backlog_of(*jobs)
    assert choose(backlog, cpus(2)) == jobs[:2]
    assert backlog.ids == {jobs[2].id}
    assert choose(backlog, cpus(2)) == [jobs[2]]
    assert len(backlog) == 0 and backlog.queues() == []


def test_a_job_is_queued_once() -> None:
    queued = job()
    backlog = backlog_of(queued)
    assert not backlog.push(queued)
    assert choose(backlog, cpus(2)) == [queued]


def test_a_big_sweep_is_discarded_in_one_call_and_the_rest_keep_their_order() -> None:
    sweep = [job("alice", queue=q) for q in ("a", "b") for _ in range(1000)]
    others = [job("bob"), job("alice"), job("alice", priority=1)]
    backlog = backlog_of(*sweep, *others)

    dropped = backlog.discard({j.id for j in sweep} | {10**9})

    assert dropped == {j.id for j in sweep}  # the id that was never queued is not claimed
    assert backlog.ids == {j.id for j in others}
    assert backlog.queues() == ["default"]
    assert choose(backlog, cpus(3)) == [others[0], others[2], others[1]]
    assert backlog.discard([others[0].id]) == set()  # gone already: nothing to drop


# --- the running jobs, kept as a tally --------------------------------------------------


def test_a_tally_of_running_jobs_keeps_its_sums_as_jobs_start_and_end() -> None:
    a1, a2, b1 = job("alice", gpus=2), job("alice"), job("bob", gpus=1)
    running = Running([a1, a2, b1])
    running.add(a1)  # started once only
    assert (len(running), running.gpus, running.held) == (3, 3, {"alice": 2, "bob": 1})
    assert running.slots == {"alice": 3, "bob": 1}  # a CPU job weighs one slot
    assert running.discard(b1.id) == b1 and running.discard(b1.id) is None
    assert running.discard(a1.id) == a1
    assert (running.gpus, running.slots, running.held) == (0, {"alice": 1}, {})
    assert list(running) == [a2] and a2.id in running


def test_a_users_cpu_jobs_end_one_by_one_beside_their_gpu_jobs() -> None:
    # A user's CPU jobs hold no GPUs: their ends leave the GPUs the user's others hold
    # (the dispatcher keeps one tally all day: an end must never break the next one).
    c1, c2, c3, g1 = job("alice"), job("alice"), job("alice"), job("alice", gpus=2)
    running = Running([c1, c2, c3])
    assert running.held == {} and running.slots == {"alice": 3}
    running.discard(c1.id)
    running.discard(c2.id)
    running.add(g1)
    running.discard(c3.id)
    assert (running.held, running.slots) == ({"alice": 2}, {"alice": 2})
    running.discard(g1.id)
    assert (len(running), running.gpus, running.held, running.slots) == (0, 0, {}, {})


def test_a_tally_chooses_what_a_list_of_the_same_jobs_chooses_and_is_left_as_it_was() -> None:
    running = [job("alice", gpus=2), job("bob"), job("carol", gpus=1, queue="small")]
    queued = [
        job(user, gpus=gpus, queue=queue)
        for user in ("alice", "bob", "carol")
        for gpus in (0, 1, 2)
        for queue in ("default", "small")
    ]
    rules = {"small": QueueRule(max_gpus_per_user=2)}
    workers = [(4, 4), (4, 2)]
    tally = Running(running)
    by_list = choose(
        backlog_of(*queued),
        capacity(workers, running),
        running=running,
        usage={"bob": 0.01},
        rules=rules,
        max_gpus_per_user=3,
    )
    by_tally = choose(
        backlog_of(*queued),
        capacity(workers, tally),
        running=tally,
        usage={"bob": 0.01},
        rules=rules,
        max_gpus_per_user=3,
    )
    assert by_tally == by_list and len(by_list) == 5
    assert (len(tally), tally.gpus, tally.held) == (3, 3, {"alice": 2, "carol": 1})
