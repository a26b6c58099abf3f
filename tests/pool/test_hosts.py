"""The pool across hosts: the server (with its PostgreSQL), the Dask scheduler and two
workers, each in a network namespace of its own (support.netns), joined by links the test
cuts. One cut, shared by the tests of this module: it is the expensive part."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dask
import pytest
from distributed import Scheduler, SpecCluster
from distributed.deploy.spec import ProcessInterface
from support.netns import Network, network
from support.notebooks import write_notebook
from support.pool import wait_finished
from support.postgres import PostgresServer
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus, SubmitJob

# The first test's setup is the whole cut, minutes on a starved machine.
pytestmark = [pytest.mark.timeout(480), pytest.mark.postgres]

SCHEDULER_PORT = 8786
# Seconds without a heartbeat before the server counts a worker gone: small, for the test.
# A worker stops its jobs itself after two thirds of it (executor.fencing): 6 s, still three
# heartbeats (one each 2 s) on a busy machine.
WORKER_TIMEOUT = 9
# Dask's own time before it calls a connection that stopped answering dead (30 s by default):
# how long the cut worker stays in the scheduler's list, and how long until it notices. Longer
# than the server takes to count the job lost (WORKER_TIMEOUT, a heartbeat, LOST_GRACE).
DASK_ENV = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "20s"}

# A job that says which kernel runs it and ends when the test creates the file `go`. Given
# `before`, a file in `folder`, it says whether the kernel whose pid is there still runs, and
# puts its own pid there: a second attempt says whether the first one's kernel is gone.
WAITING_JOB = """\
import os, pathlib, time
import psutil
print('started', os.getpid(), flush=True)
if before:
    mark = pathlib.Path(folder) / before
    if mark.exists():
        pid = int(mark.read_text())
        try:
            gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        print('the kernel before it,', pid, 'gone' if gone else 'still running', flush=True)
    mark.write_text(str(os.getpid()))
while not (pathlib.Path(folder) / go).exists():
    time.sleep(0.1)
print('finished', os.getpid(), flush=True)"""
WAITING_PARAMETERS = "folder = ''\ngo = 'go'\nbefore = ''"


def until_listening(address: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    def listening() -> bool:
        with socket.create_connection((address, port), timeout=1):
            return True

    wait_for(
        listening,
        60,
        f"{address}:{port} to listen",
        retry_on=(OSError,),
        gone=lambda: f"{process.args!r} exited" if process.poll() is not None else None,
        context=lambda: log.read_text()[-2000:],
    )


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with network(["server", "scheduler", "worker-a", "worker-b"]) as made:
        yield made


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hosts")


@pytest.fixture(scope="module")
def database(net: Network) -> Iterator[PostgresServer]:
    """PostgreSQL on the server's host, on its loopback: no other host reaches it."""
    pg = PostgresServer.find(wrap=net.command("server", []))
    if pg is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("LABRUN_REQUIRE_POSTGRES"):
            pytest.fail(message + "; LABRUN_REQUIRE_POSTGRES is set")
        pytest.skip(message)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def scheduler(net: Network, folder: Path) -> str:
    address = net.hosts["scheduler"].address
    log = folder / "scheduler.log"
    dask = str(Path(sys.executable).parent / "dask")
    process = net.start(
        "scheduler",
        [dask, "scheduler", "--host", address, "--port", str(SCHEDULER_PORT), "--no-dashboard"],
        log,
        env=DASK_ENV,
    )
    until_listening(address, SCHEDULER_PORT, process, log)
    return f"tcp://{address}:{SCHEDULER_PORT}"


def start_server(
    net: Network, database: PostgresServer, scheduler: str, directory: Path, *options: str
) -> LabrunServer:
    server = LabrunServer(
        directory,
        host=net.hosts["server"].address,
        wrap=net.command("server", []),
        db_url=database.create_database(),
        options=[f"--LabRun.dask_scheduler={scheduler}", *options],
    )
    # What the workers reach it at (its own URL here, said as a team would).
    server.extra_env["LABRUN_PUBLIC_URL"] = server.url
    server.start()
    return server


def start_worker(net: Network, host: str, scheduler: str, folder: Path) -> subprocess.Popen[bytes]:
    """`labrun worker` on ``host``, named after it, with its own data folder as on its own
    machine (its spool of records the server could not take yet is there)."""
    data = folder / host
    data.mkdir(exist_ok=True)
    return net.start(
        host,
        [sys.executable, "-m", "labrun.cli", "worker", scheduler, "--gpus", "0", "--name", host],
        folder / f"{host}.log",
        env={**DASK_ENV, "LABRUN_DATA_DIR": str(data), "TMPDIR": str(data)},
    )


def pool_hosts(client: Client) -> dict[str, str]:
    """The address of each live worker of the pool, by its host's address."""
    return {w.host: w.id for w in client.pool().workers if w.alive}


def submit(client: Client, notebook: Path, **parameters: str) -> int:
    content = json.loads(notebook.read_text())
    job = SubmitJob(notebook=notebook.name, content=content, parameters=parameters)
    return client.submit_job(job).id


def log_text(client: Client, run_id: int, attempt: int | None = None) -> str:
    return "".join(e.text for e in client.logs(run_id, attempt=attempt).entries)


def started_pid(client: Client, run_id: int, attempt: int) -> int | None:
    found = re.search(r"started (\d+)", log_text(client, run_id, attempt))
    return int(found[1]) if found else None


@dataclass
class Cut:
    """What the test saw of one job while its worker's link was cut, and after."""

    run_id: int
    lost_worker: str  # the cut worker's id, as the job's first attempt recorded it
    other_worker: str
    rejoined_worker: str = ""
    pids: dict[int, int] = field(default_factory=dict)  # the kernel of each attempt
    gave_up: list[str] = field(default_factory=list)  # what the cut worker logged it gave up
    later_runs: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(
    net: Network, database: PostgresServer, scheduler: str, folder: Path
) -> Iterator[LabrunServer]:
    server = start_server(
        net, database, scheduler, folder / "server", f"--LabRun.worker_timeout={WORKER_TIMEOUT}"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workers(net: Network, scheduler: str, folder: Path) -> list[subprocess.Popen[bytes]]:
    """Two workers, started while the server starts (they wait for its plugins)."""
    return [start_worker(net, host, scheduler, folder) for host in ("worker-a", "worker-b")]


@pytest.fixture(scope="module")
def cut(
    net: Network, workers: list[subprocess.Popen[bytes]], server: LabrunServer, folder: Path
) -> Cut:
    """A job on worker A; A's link cut until the job completed on B and the scheduler let A
    go; two more jobs submitted, the link restored: A back, the two jobs run at once."""
    a, b = net.hosts["worker-a"].address, net.hosts["worker-b"].address
    notebook = write_notebook(folder / "wait.ipynb", WAITING_JOB, parameters=WAITING_PARAMETERS)
    with Client(server.url, server.token) as client:
        wait_for(lambda: pool_hosts(client).keys() == {a, b}, 120, "both workers")
        run_id = submit(client, notebook, folder=str(folder), go="go", before="kernel.pid")
        wait_for(lambda: started_pid(client, run_id, 1), 120, "the job to start")
        first = client.get_run(run_id).worker
        assert first is not None
        victim, other = ("worker-a", b) if first.startswith(f"{a}:") else ("worker-b", a)
        seen = Cut(run_id, first, pool_hosts(client)[other])

        log = folder / f"{victim}.log"
        net.cut(victim)
        wait_for(
            lambda: client.get_run(run_id).attempt == 2 and started_pid(client, run_id, 2),
            120,
            "the job to start again on the other worker",
        )
        # The scheduler lets the cut worker go, and the worker its connection (its job it
        # stopped itself already).
        victim_address = net.hosts[victim].address
        wait_for(
            lambda: victim_address not in {w.host for w in client.pool().workers},
            120,
            "the scheduler to let the cut worker go",
        )
        (folder / "go").touch()
        wait_finished(client, run_id)
        seen.pids = {n: started_pid(client, run_id, n) or 0 for n in (1, 2)}
        seen.gave_up = re.findall(r"gave up (run \d+ \(attempt \d+\))", log.read_text())

        # Two jobs that wait: the first takes the other worker, the second waits for a free
        # one, which only the cut worker can be once it is back.
        seen.later_runs = [
            submit(client, notebook, folder=str(folder), go="later") for _ in range(2)
        ]
        net.restore(victim)
        seen.rejoined_worker = wait_for(
            lambda: pool_hosts(client).get(victim_address), 120, "the cut worker to rejoin"
        )
        wait_for(
            lambda: all(client.get_run(i).status == RunStatus.running for i in seen.later_runs),
            120,
            "both later jobs to run",
        )
        (folder / "later").touch()
        for later in seen.later_runs:
            wait_finished(client, later)
    for process in workers:  # the CPU is the next test's
        net.stop(process)
    return seen


def statuses(client: Client, run_id: int) -> list[str]:
    return [t.status.value for t in client.transitions(run_id).transitions]


def test_a_cut_off_workers_job_is_lost_and_completes_on_the_other(
    cut: Cut, server: LabrunServer
) -> None:
    with Client(server.url, server.token) as client:
        run = client.get_run(cut.run_id)
        assert run.status == RunStatus.completed and run.attempt == 2
        assert run.worker == cut.other_worker
        assert statuses(client, cut.run_id) == [
            "queued", "running", "lost", "queued", "running", "completed"
        ]  # fmt: skip
        lost = client.transitions(cut.run_id).transitions[2].message or ""
        # Lost by the server's heartbeat timeout, before Dask let the worker go.
        assert lost == f"its worker {cut.lost_worker} stopped sending heartbeats"
        # The first attempt's log, up to the cut, is kept apart from the second's.
        first, second = (log_text(client, cut.run_id, n) for n in (1, 2))
        assert f"started {cut.pids[1]}\n" in first
        assert second.startswith(f"--- attempt 2 of 3 on {cut.other_worker} ---\n")
        assert f"finished {cut.pids[2]}\n" in second
        # The cut-off worker stopped the first attempt's kernel itself (it fenced itself),
        # before the second attempt's kernel began: the job never ran twice at once.
        assert f"the kernel before it, {cut.pids[1]} gone\n" in second
        assert cut.gave_up == [f"run {cut.run_id} (attempt 1)"]


def test_the_cut_off_worker_rejoins_and_takes_work(cut: Cut, server: LabrunServer) -> None:
    with Client(server.url, server.token) as client:
        # A new Dask worker on the same host (a new address), heartbeating again.
        assert cut.rejoined_worker != cut.lost_worker
        assert cut.rejoined_worker.split(":")[0] == cut.lost_worker.split(":")[0]
        runs = [client.get_run(i) for i in cut.later_runs]
        assert {r.status for r in runs} == {RunStatus.completed}
        assert {r.worker for r in runs} == {cut.rejoined_worker, cut.other_worker}
        assert all(r.attempt == 1 for r in runs)


def test_the_lost_attempt_records_nothing_over_the_next(cut: Cut, server: LabrunServer) -> None:
    """Whatever the cut worker kept for the server (its spool) came in after it rejoined:
    none of it changed the run the other worker completed."""
    with Client(server.url, server.token) as client:
        run = client.get_run(cut.run_id)
        assert run.status == RunStatus.completed and run.worker == cut.other_worker
        assert statuses(client, cut.run_id).count("completed") == 1
        notebook = client.download_artifact(cut.run_id, "wait.ipynb").decode()
        assert f"finished {cut.pids[2]}" in notebook and f"started {cut.pids[1]}" not in notebook


def test_workers_reach_the_scheduler_and_the_server_but_not_the_database(
    net: Network, server: LabrunServer, database: PostgresServer
) -> None:
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    server_host = net.hosts["server"].address
    where = {
        "server": (server_host, server.port),
        "scheduler": (net.hosts["scheduler"].address, SCHEDULER_PORT),
        "database": (server_host, database.port),
        "database, as the server names it": ("127.0.0.1", database.port),
    }
    reached = {
        what: net.run("worker-b", [sys.executable, "-c", probe, host, str(port)]).returncode == 0
        for what, (host, port) in where.items()
    }
    assert reached == {
        "server": True,
        "scheduler": True,
        "database": False,
        "database, as the server names it": False,
    }
    # And the server does reach it: the store answers.
    with Client(server.url, server.token) as client:
        assert client.pool().state == "ready"


class NamespaceWorker(ProcessInterface):
    """`labrun worker` started on the next of ``hosts`` (a namespace each): to this cluster
    what a batch job is to dask-jobqueue's, or a pod to dask-kubernetes'."""

    def __init__(
        self,
        scheduler: str,
        name: str,
        *,
        net: Network,
        hosts: Iterator[str],
        folder: Path,
        started: list[subprocess.Popen[bytes]],
    ) -> None:
        super().__init__(scheduler, name)
        self.scheduler, self.name, self.net = scheduler, name, net
        self.host = next(hosts)
        self.folder = folder
        self.started = started
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        data = self.folder / self.name
        data.mkdir()
        command = [sys.executable, "-m", "labrun.cli", "worker", self.scheduler]
        self.process = self.net.start(
            self.host,
            [*command, "--gpus", "0", "--name", self.name],
            self.folder / f"{self.name}.log",
            env={"LABRUN_DATA_DIR": str(data), "TMPDIR": str(data)},
        )
        self.started.append(self.process)
        await super().start()

    async def close(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.net.stop, self.process)
        await super().close()


class AdaptivePool(SpecCluster):
    def _new_worker_name(self, worker_number: int) -> str:
        # The name `labrun worker --name` gives it: the scheduler's name for it too.
        return f"adaptive-{worker_number}"


def test_an_adaptive_cluster_starts_labrun_workers_on_two_hosts_and_lets_them_go(
    net: Network, database: PostgresServer, folder: Path
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    here = folder / "adaptive"
    here.mkdir()
    scheduler = {
        "cls": Scheduler,
        "options": {"host": net.root_address, "port": 0, "dashboard_address": "127.0.0.1:0"},
    }
    worker = {
        "cls": NamespaceWorker,
        "options": {
            "net": net,
            "hosts": itertools.cycle(["worker-a", "worker-b"]),
            "folder": here,
            "started": started,
        },
    }
    # Dask guesses half a second for a task it has not seen end, and would ask for the second
    # worker only once the first job had run a while: a job's task is long (README).
    durations = {"distributed.scheduler.default-task-durations": {"labrun-run": "1h"}}
    with (
        dask.config.set(durations),
        AdaptivePool(scheduler=scheduler, worker=worker, shutdown_on_close=True) as cluster,
    ):
        cluster.adapt(minimum=0, maximum=2, interval="500ms", wait_count=4)
        server = start_server(
            net,
            database,
            cluster.scheduler_address,
            here / "server",
            "--LabRun.adaptive_backlog=2",
        )
        try:
            notebook = write_notebook(
                here / "wait.ipynb", WAITING_JOB, parameters=WAITING_PARAMETERS
            )
            with Client(server.url, server.token) as client:
                wait_for(lambda: client.pool().state == "ready", 60, "the pool")
                assert client.pool().workers == []
                ids = [submit(client, notebook, folder=str(here), go="go") for _ in range(3)]

                def running_on() -> set[str]:
                    runs = [client.get_run(i) for i in ids]
                    return {r.worker for r in runs if r.status == RunStatus.running and r.worker}

                # Three jobs, and the cluster may have two workers: one on each host.
                workers = wait_for(lambda: len(on := running_on()) == 2 and on, 180, "two workers")
                hosts = {w.split(":")[0] for w in workers}
                assert hosts == {net.hosts["worker-a"].address, net.hosts["worker-b"].address}
                (here / "go").touch()
                for run_id in ids:
                    assert wait_finished(client, run_id).status == RunStatus.completed
                # The queue is empty: the cluster retires its workers, which leave for good.
                wait_for(lambda: not client.pool().workers, 120, "the workers to retire")
                for run_id in ids:
                    assert statuses(client, run_id) == ["queued", "running", "completed"]
            logs = "".join(p.read_text() for p in here.glob("adaptive-*.log"))
            assert logs.count("labrun worker adaptive-") == len(started) >= 2
            assert "joining it again" not in logs
        finally:
            server.stop()
