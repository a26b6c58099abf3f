"""A team's set-up: two users' servers on one PostgreSQL database and one Dask scheduler
with two `labrun worker` processes. One server dispatches (the scheduler of record); the
other passes it what it queues and cancels, sees every event, and takes over when the
dispatching server dies."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import websocket
from support.notebooks import write_notebook
from support.pool import (
    labrun_cli,
    start_scheduler,
    start_worker,
    stop_processes,
    wait_finished,
    wait_for_pool,
)
from support.postgres import PostgresServer
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import GrantStatus, RequestGrant, RunStatus, SubmitJob

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]


class Team:
    def __init__(self, servers: dict[str, LabrunServer], notebooks: Path) -> None:
        self.servers = servers
        self.notebooks = notebooks

    def client(self, user: str) -> Client:
        server = self.servers[user]
        return Client(server.url, server.token)

    def dispatching(self) -> str:
        """The user whose server dispatches, once both agree on one."""

        def agreed() -> str | None:
            seen = {}
            for user, server in self.servers.items():
                if server.process is None or server.process.poll() is not None:
                    continue
                with Client(server.url, server.token) as client:
                    status = client.pool().dispatcher
                if status is None:
                    return None
                seen[user] = status
            holders = {s.server for s in seen.values()}
            leaders = [u for u, s in seen.items() if s.this_server]
            return leaders[0] if len(holders) == 1 and len(leaders) == 1 else None

        return wait_for(agreed, timeout=60, what="one server to dispatch, as all agree")

    def submit(self, user: str, notebook: str, **parameters: Any) -> int:
        with self.client(user) as client:
            path = self.notebooks / notebook
            run = client.submit_job(
                SubmitJob(
                    notebook=str(path),
                    content=json.loads(path.read_text()),
                    parameters=parameters,
                )
            )
        return run.id


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("team")
    db_url = postgres.create_database()
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(
        notebooks / "who.ipynb",
        "from labrun.client import Client\n"
        "print('acting for', Client().request('GET', '/users/me').json()['user'])",
    )
    write_notebook(
        notebooks / "slow.ipynb",
        "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(seconds)\n"
        "print('finished', flush=True)",
        parameters="seconds = 60",
    )
    address, scheduler = start_scheduler(root)
    # One (fake) GPU each, for the GPU cells' grants.
    workers = [
        start_worker(address, name, root, {"LABRUN_FAKE_GPUS": "1"})
        for name in ("host-a", "host-b")
    ]
    processes = [scheduler, *workers]
    servers = {
        user: LabrunServer(
            root / user,
            token=f"{user}-token",
            db_url=db_url,
            options=[
                f"--LabRun.dask_scheduler={address}",
                "--LabRun.lease_seconds=2",
                "--LabRun.max_gpus_per_user=1",
                # Workers give their jobs up after 6 s cut off from the server and the
                # scheduler (executor/fencing.py): the last test stops every server longer.
                "--LabRun.worker_timeout=9",
            ],
            env={"LABRUN_USER": user},
        )
        for user in ("alice", "bob")
    }
    try:
        for server in servers.values():
            server.start()
        wait_for_pool(servers["alice"], workers=2)
        yield Team(servers, notebooks)
    finally:
        for server in servers.values():
            server.stop()
        stop_processes(reversed(processes))


class Stream:
    """The event stream of one server, read on a thread."""

    def __init__(self, server: LabrunServer) -> None:
        url = f"ws://127.0.0.1:{server.port}/labrun/api/v1/events"
        self.socket = websocket.create_connection(
            url, timeout=30, header=[f"Authorization: token {server.token}"], suppress_origin=True
        )
        assert json.loads(self.socket.recv())["type"] == "hello"
        self.socket.settimeout(None)
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.events.append(json.loads(self.socket.recv()))
        except (websocket.WebSocketException, OSError, ValueError):
            pass  # closed

    def statuses(self, run_id: int) -> list[str]:
        return [
            e["data"].get("status")
            for e in list(self.events)
            if e["type"] in ("run.created", "run.updated") and e["data"].get("id") == run_id
        ]

    def close(self) -> None:
        self.socket.close()


def test_one_server_dispatches_and_the_other_sees_its_jobs_live(team: Team) -> None:
    leader = team.dispatching()
    other = next(u for u in team.servers if u != leader)
    # `labrun pool` through either server names the one that dispatches.
    said = labrun_cli(team.servers[other], "pool").stdout
    assert f"Dispatching: {leader}'s server at {team.servers[leader].url}" in said
    assert "Dispatching: this server" in labrun_cli(team.servers[leader], "pool").stdout
    stream = Stream(team.servers[other])
    try:
        # Submitted through the server that dispatches; followed on the other.
        run_id = team.submit(leader, "who.ipynb")
        with team.client(other) as client:
            run = wait_finished(client, run_id)
            assert run.status == RunStatus.completed, run.error
        wait_for(
            lambda: {"queued", "running", "completed"} <= set(team_statuses(stream, run_id)),
            what=f"the other server's stream to show run {run_id} queued, running, completed",
        )
    finally:
        stream.close()


def team_statuses(stream: Stream, run_id: int) -> list[str]:
    return [s for s in stream.statuses(run_id) if s]


def test_a_job_queued_on_the_other_server_runs_as_its_user(team: Team) -> None:
    leader = team.dispatching()
    other = next(u for u in team.servers if u != leader)
    run_id = team.submit(other, "who.ipynb")
    with team.client(leader) as client:
        run = wait_finished(client, run_id)
        assert run.status == RunStatus.completed, run.error
        assert run.user == other
        log = "".join(e.text for e in client.logs(run_id).entries)
    # The job's own token acts for the one who submitted it, whichever server dispatched.
    assert f"acting for {other}" in log


def test_gpu_cells_are_granted_by_the_scheduler_of_record_through_either_server(
    team: Team,
) -> None:
    leader = team.dispatching()
    other = next(u for u in team.servers if u != leader)
    with team.client(other) as client:
        # A GPU cell's grant asked through the server that does not dispatch is given by
        # the one that does (told, and answering, through the store's events)
        first = client.request_grant(RequestGrant(key="team-cell-1", gpus=1))
        assert first.status == GrantStatus.granted, first
        # under the same user's limit as jobs (one GPU), wherever they ask
        second = client.request_grant(RequestGrant(key="team-cell-2", gpus=1, wait=0))
        assert second.status == GrantStatus.waiting
    with team.client(leader) as client:
        held = {g["key"]: g["status"] for g in client.request("GET", "/grants").json()["grants"]}
        assert held == {"team-cell-1": "granted", "team-cell-2": "waiting"}
    with team.client(other) as client:
        # and the first cell's end (carried by the next request) lets the second in
        second = client.request_grant(
            RequestGrant(key="team-cell-2", gpus=1, release=["team-cell-1"])
        )
        assert second.status == GrantStatus.granted, second
        assert client.release_grants(["team-cell-2"]).grants == []


def kernel_pid(client: Client, run_id: int) -> int:
    def found() -> int | None:
        for entry in client.logs(run_id).entries:
            if entry.text.startswith("pid "):
                return int(entry.text.split()[1])
        return None

    return wait_for(found, timeout=120, what=f"run {run_id}'s kernel to print its pid")


def test_a_cancel_through_the_server_that_does_not_dispatch_stops_the_kernel(
    team: Team,
) -> None:
    leader = team.dispatching()
    other = next(u for u in team.servers if u != leader)
    # Its owner's own server, which does not dispatch, queues it and cancels it.
    run_id = team.submit(other, "slow.ipynb")
    with team.client(other) as client:
        pid = kernel_pid(client, run_id)
        assert client.cancel_run(run_id).status == RunStatus.cancelled
    wait_for(lambda: not psutil.pid_exists(pid), timeout=60, what=f"kernel {pid} to stop")
    with team.client(leader) as client:
        assert client.get_run(run_id).status == RunStatus.cancelled
        assert "finished" not in "".join(e.text for e in client.logs(run_id).entries)


def test_jobs_outlive_the_dispatching_server_and_another_takes_over(team: Team) -> None:
    leader = team.dispatching()
    other = next(u for u in team.servers if u != leader)
    running = team.submit(leader, "slow.ipynb", seconds=8)
    with team.client(leader) as client:
        kernel_pid(client, running)
    queued = [team.submit(leader, "slow.ipynb", seconds=1) for _ in range(3)]

    # The dispatching server dies: no stop, no letting go of its lease.
    server = team.servers[leader]
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(20)
    assert team.dispatching() == other

    with team.client(other) as client:
        for run_id in [running, *queued]:
            run = wait_finished(client, run_id, timeout=180)
            assert run.status == RunStatus.completed, (run_id, run.error)
            # Started once: the takeover neither lost it nor ran it again.
            assert run.attempt == 1, run_id
        log = "".join(e.text for e in client.logs(running).entries)
        assert "finished" in log


def test_jobs_run_to_the_end_while_no_server_is_up_and_are_recorded_when_one_is(
    team: Team,
) -> None:
    leader = team.dispatching()
    running = team.submit(leader, "slow.ipynb", seconds=25)
    with team.client(leader) as client:
        kernel_pid(client, running)

    # Every server stops (JupyterHub culls them): no server for the workers to report to
    for server in team.servers.values():
        server.stop()
    logs = [team.notebooks.parent / f"{name}.log" for name in ("host-a", "host-b")]

    # The job's worker sees the server away past its fence time, but the scheduler there:
    # it keeps its job (a worker cut off from both would give it up)
    def kept() -> bool:
        return any("which keeps its jobs" in log.read_text() for log in logs)

    wait_for(kept, timeout=120, what="the worker to keep its job with no server up")

    # When a server comes back, the job ran to its end once, and is recorded so
    team.servers[leader].start()
    with team.client(leader) as client:
        run = wait_finished(client, running, timeout=180)
        assert run.status == RunStatus.completed, run.error
        assert run.attempt == 1
        assert "finished" in "".join(e.text for e in client.logs(running).entries)
    assert not any("gave up run" in log.read_text() for log in logs)
