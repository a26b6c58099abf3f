"""Every command in the README runs, so none goes stale.

The README's shell commands are run here as written, against a real server with a local
pool of two fake GPUs, a real PostgreSQL and a real Dask scheduler. Only what names a place
that does not exist here is substituted: run ids (``42``), hosts (``sched.example``) and
ports. Services (``labrun server``, ``labrun worker``, ``dask scheduler``, ``jupyter lab``)
are started, seen to work, and stopped. The ``make`` commands are CI's: ``.ci/run`` runs each.

A README command that no test here runs fails ``test_every_readme_command_is_run_here``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.postgres import PostgresServer, free_port
from support.server import LabrunServer, labrun_answers, stop_group, wait_started
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import CreateRun

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = pytest.mark.timeout(600)

# The README's commands, by the section that shows them, in the order the tests run them
# (a queue is created before a job is sent to it).
NOTEBOOK_JOBS = [
    "labrun queues create urgent --priority 10 --max-gpus-per-user 2",
    "labrun submit train.ipynb -p lr 0.01 -p epochs 3 --gpus 1 --wait",
    (
        "labrun submit train.ipynb -f params.yaml --queue urgent --priority 5 --project seg "
        "--name unet-lr-0.01"
    ),
    "labrun sweep train.ipynb -g lr 0.001,0.01,0.1 -g batch_size 32,64 --gpus 1 --wait -o executed/",
    'labrun sweep train.ipynb -g seed "[1, 2, 3, 4, 5, 6, 7, 8]" --samples 4 --seed 0',
    "labrun rerun 42 --wait",
    "labrun rerun 42 --strict --wait",
    "labrun cancel 42",
    "labrun queues",
    "labrun pool",
]
REPORTS = [
    "labrun report notebooks/sweep_report.ipynb -p sweep 12 -o reports/",
    "labrun report notebooks/sweep_report.ipynb -p project seg -p hours 48",
    (
        "labrun sweep notebooks/train_classifier.ipynb -g lr 0.01,0.05,0.2 -g hidden 16,64 "
        "--report notebooks/sweep_report.ipynb --wait -o out/"
    ),
    "labrun reports",
]
COMMAND_LINE = [
    "labrun runs",
    "labrun runs --project seg --status completed --sort metrics.loss --json",
    "labrun show 42",
    "labrun logs 42 --follow",
    "labrun logs 42 --attempt 1",
    "labrun compare 41 42 43",
    "labrun datasets",
    "labrun datasets show frames",
]
TOKENS = [
    "labrun tokens",
    "labrun tokens create nightly --lifetime 7d",
    "labrun tokens revoke a1b2c3d4e5f60718",
    "labrun whoami",
]
AUDIT = [
    "labrun audit",
    "labrun audit --user alice --since 7d",
    "labrun audit --action run.cancel --run 42 --json",
]
SERVER = ["labrun server --port 8765"]
POSTGRES = [
    "labrun db upgrade --db-url postgresql+psycopg://labrun@db:5432/labrun",
    "labrun db upgrade --db-url postgresql+psycopg://labrun@db.example:5432/labrun",
    "jupyter lab --LabRun.db_url=postgresql+psycopg://labrun@db.example:5432/labrun",
]
DASK_CLUSTER = [
    "dask scheduler --port 8786",
    "labrun worker tcp://sched.example:8786",
    (
        "jupyter lab --LabRun.dask_scheduler=tcp://sched.example:8786 "
        "--LabRun.public_url=http://lab.example:8888/"
    ),
]
RUN_HERE = (
    NOTEBOOK_JOBS + REPORTS + COMMAND_LINE + TOKENS + AUDIT + SERVER + POSTGRES + DASK_CLUSTER
)


def words(command: str) -> tuple[str, ...]:
    return tuple(shlex.split(command, comments=True))


def readme_commands() -> list[tuple[str, ...]]:
    """Each command of the README's ``bash`` blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if argv := words(line):
                commands.append(argv)
    return commands


def test_every_readme_command_is_run_here_or_by_ci() -> None:
    commands = readme_commands()
    assert len(commands) > 30  # the parser found the blocks
    ci = (ROOT / ".ci" / "run").read_text()
    for argv in commands:
        if argv[0] == "make":
            assert re.search(rf"^make {argv[1]}\b", ci, re.MULTILINE), f"CI does not run {argv}"
        else:
            assert argv in {words(c) for c in RUN_HERE}, f"no test runs the README's {argv}"
    # And nothing here is left over from an older README
    assert {words(c) for c in RUN_HERE} <= set(commands)


# --- the commands, against a real server ---------------------------------------------------

TRAIN_PARAMETERS = "lr = 0.1\nepochs = 1\nbatch_size = 16\nseed = 0\nseconds = 0.0"
TRAIN = """\
import time
from pathlib import Path

import labrun

Path("data/frames").mkdir(parents=True, exist_ok=True)
Path("data/frames/frame-0.txt").write_text("frame 0")"""
TRAIN_DATASET = "%load_ext labrun\n%mldataset frames data/frames"
TRAIN_LOOP = """\
time.sleep(seconds)
for step in range(epochs):
    labrun.log({"loss": lr / (step + 1) + batch_size * 1e-4 + seed * 1e-5}, step=step)
print("trained", lr, epochs, batch_size, seed)"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    server = LabrunServer(
        tmp_path_factory.mktemp("readme-server"), pool=True, env={"LABRUN_FAKE_GPUS": "2"}
    )
    server.start()
    wait_for_pool(server, workers=2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A researcher's folder: the README's ``train.ipynb`` and ``params.yaml``, and the
    example notebooks (the classifier replaced by a quick one with the same parameters)."""
    folder = tmp_path_factory.mktemp("readme-work")
    write_notebook(
        folder / "train.ipynb", TRAIN, TRAIN_DATASET, TRAIN_LOOP, parameters=TRAIN_PARAMETERS
    )
    (folder / "params.yaml").write_text("lr: 0.05\nepochs: 2\n")
    (folder / "notebooks").mkdir()
    write_notebook(
        folder / "notebooks" / "train_classifier.ipynb",
        "import labrun\n"
        "for step in range(3):\n"
        "    labrun.log({'loss': lr * hidden / (step + 1), 'val_accuracy': 0.5 + lr}, step=step)",
        parameters="lr = 0.05\nhidden = 32",
    )
    shutil.copy(ROOT / "notebooks" / "sweep_report.ipynb", folder / "notebooks")
    return folder


Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def readme(server: LabrunServer, workdir: Path) -> Runner:
    """Run a README command against ``server`` in ``workdir``; its output if it succeeded.

    ``subs`` replaces words: a run id (``42`` → ``7``) or part of a word (a host).
    """

    def run(command: str, **subs: Any) -> subprocess.CompletedProcess[str]:
        argv = [substitute(word, subs) for word in words(command)]
        assert argv[0] == "labrun"
        done = subprocess.run(
            [sys.executable, "-m", "labrun.cli", *argv[1:]],
            env={**server.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=workdir,
        )
        assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    return run


def substitute(word: str, subs: dict[str, Any]) -> str:
    for old, new in subs.items():
        old = old.removeprefix("_")  # keyword arguments cannot be numbers: _42=...
        word = str(new) if word == old else word.replace(old, str(new)) if "." in old else word
    return word


@pytest.fixture(scope="module")
def client(server: LabrunServer) -> Iterator[Client]:
    with Client(server.url, server.token) as client:
        yield client


def run_named(client: Client, name: str) -> Any:
    (run,) = client.list_runs(q=name).runs
    return run


def test_the_notebook_job_commands(readme: Runner, client: Client, workdir: Path) -> None:
    create, submit, submit_file, sweep, sample, rerun, strict, cancel, queues, pool = NOTEBOOK_JOBS
    readme(create)
    assert {q.name: q.priority for q in client.queues().queues}["urgent"] == 10

    waited = readme(submit)
    assert "completed" in waited.stdout
    first = client.list_runs(kind="notebook", limit=1).runs[0]
    assert first.params == {"lr": 0.01, "epochs": 3}
    assert first.status.value == "completed"

    readme(submit_file)
    queued = run_named(client, "unet-lr-0.01")
    assert (queued.project, queued.queue, queued.params) == (
        "seg",
        "urgent",
        {"lr": 0.05, "epochs": 2},
    )

    readme(sweep)
    assert len(list((workdir / "executed").glob("*.ipynb"))) == 6
    readme(sample)

    readme(rerun, _42=first.id)
    again = client.list_runs(kind="notebook", q="rerun of", limit=1).runs[0]
    assert again.params == first.params and again.status.value == "completed"
    # The pool has the packages the first run recorded: a strict re-run runs, and says so
    checked = readme(strict, _42=first.id)
    assert f"as run {first.id} recorded" in checked.stdout

    # A long job, cancelled while it runs
    readme("labrun submit train.ipynb -p seconds 120.0 --name long")
    long = run_named(client, "long")
    wait_for(lambda: client.get_run(long.id).status.value == "running", what="the long job")
    readme(cancel, _42=long.id)
    wait_for(lambda: client.get_run(long.id).status.value == "cancelled", what="the cancel")

    assert "urgent" in readme(queues).stdout
    assert "Fake NVML GPU" in readme(pool).stdout


def test_the_report_commands(readme: Runner, client: Client, workdir: Path) -> None:
    by_sweep, by_project, sweep_with_report, listing = REPORTS
    grid_sweep = client.list_runs(kind="sweep").runs[-1]  # the oldest: the README's grid
    readme(by_sweep, _12=grid_sweep.id)
    (html,) = (workdir / "reports").glob("*.html")
    assert "Summary" in html.read_text()
    wait_for(
        lambda: client.get_run(run_named(client, "unet-lr-0.01").id).status.finished,
        what="the seg job",
    )
    readme(by_project)
    readme(sweep_with_report)
    assert len(list((workdir / "out").glob("*.ipynb"))) == 6
    assert len(client.reports().reports) == 3
    assert "sweep" in readme(listing).stdout


def test_the_command_line_commands(readme: Runner, client: Client) -> None:
    runs, runs_json, show, logs, attempt, compare, datasets, dataset = COMMAND_LINE
    total = client.list_runs().total
    assert f"20 of {total} runs" in readme(runs).stdout  # newest first, 20 by default
    listed = json.loads(readme(runs_json).stdout)
    assert [r["name"] for r in listed["runs"]] == ["unet-lr-0.01"]
    # Three runs of the README's first sweep, named after its grid
    ids = [r.id for r in client.list_runs(q="batch_size=", status="completed", limit=3).runs]
    assert "lr" in readme(show, _42=ids[0]).stdout
    assert "trained" in readme(logs, _42=ids[0]).stdout
    assert "trained" in readme(attempt, _42=ids[0]).stdout
    readme(compare, _41=ids[0], _42=ids[1], _43=ids[2])
    assert "frames" in readme(datasets).stdout
    assert "v1" in readme(dataset).stdout


def test_the_token_commands(readme: Runner, server: LabrunServer) -> None:
    listing, create, revoke, whoami = TOKENS
    assert "pool" in readme(listing).stdout  # the workers' token, held by the server's user
    token = next(line for line in readme(create).stdout.splitlines() if line.startswith("lr1."))
    with Client(server.url, token) as script:
        (issued,) = [t for t in script.tokens().tokens if t.name == "nightly"]
        assert issued.status == "active"
    assert "Revoked token 'nightly'" in readme(revoke, a1b2c3d4e5f60718=issued.id).stdout
    with Client(server.url, server.token) as client:
        assert all(t.id != issued.id for t in client.tokens().tokens)
        me = client.identity()
    # The server's own user, who holds no role beyond their own runs
    assert readme(whoami).stdout.strip() == f"{me.user}: researcher"


def test_the_audit_commands(readme: Runner, client: Client) -> None:
    listing, recent, cancels = AUDIT
    run = client.create_run(CreateRun(name="audited"))
    client.cancel_run(run.id)
    assert "run.cancel" in readme(listing).stdout
    # The server's own user stands for alice: reading another's entries needs an admin
    me = client.request("GET", "/users/me").json()["user"]
    assert f"run {run.id}" in readme(recent, alice=me).stdout
    (entry,) = json.loads(readme(cancels, _42=run.id).stdout)["entries"]
    assert (entry["user"], entry["target_id"], entry["status"]) == (me, str(run.id), 200)


# --- services: started, seen to work, stopped ----------------------------------------------


class Service:
    """A README command that runs until stopped, in its own process group."""

    def __init__(self, argv: list[str], folder: Path, env: dict[str, str]) -> None:
        self.log = folder / f"{argv[0]}-{argv[1]}.log"
        self.process = subprocess.Popen(
            argv,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
            env=env,
        )

    def wait_until(self, ready: Callable[[], object], what: str, timeout: float = 90) -> None:
        wait_started(self.process, ready, what, self.log, timeout)

    def stop(self) -> None:
        stop_group(self.process)


def jupyter_lab(argv: list[str], port: int, token: str) -> list[str]:
    """The README's ``jupyter lab ...``, plus what it leaves to the user's defaults: a port,
    a token, no browser."""
    assert argv[:2] == ["jupyter", "lab"]
    command = [sys.executable, "-m", "jupyterlab", *argv[2:], "--no-browser", "--ip", "127.0.0.1"]
    command += ["--port", str(port), f"--IdentityProvider.token={token}"]
    return command + (["--allow-root"] if os.geteuid() == 0 else [])


def service_env(folder: Path) -> dict[str, str]:
    """A fresh user: own Jupyter dirs and embedded store, no server to discover."""
    env = {**os.environ, "LABRUN_DATA_DIR": str(folder / "data")}
    env["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
    env["JUPYTER_CONFIG_DIR"] = str(folder / "config")
    return env


def test_the_server_command(tmp_path: Path) -> None:
    (command,) = SERVER
    port = free_port()
    argv = [substitute(w, {"8765": port}) for w in words(command)]
    server = Service(
        [sys.executable, "-m", "labrun.cli", *argv[1:], "--token", "t"],
        tmp_path,
        service_env(tmp_path),
    )
    try:
        server.wait_until(lambda: labrun_answers(f"http://127.0.0.1:{port}/", "t"), "labrun server")
    finally:
        server.stop()


@pytest.mark.postgres
def test_the_postgresql_commands(postgres: PostgresServer, tmp_path: Path) -> None:
    upgrade, upgrade_team, lab = POSTGRES
    url = postgres.create_database()
    for command in (upgrade, upgrade_team):
        argv = words(command)
        db_url = argv[-1]
        done = subprocess.run(
            [sys.executable, "-m", "labrun.cli", *[substitute(w, {db_url: url}) for w in argv][1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    # jupyter lab on that database: what a run recorded there is in PostgreSQL
    port, token = free_port(), "t"
    team_url = words(lab)[-1].split("=", 1)[1]
    argv = [substitute(w, {team_url: url}) for w in words(lab)]
    service = Service(
        # No local pool: it is not what this command is about.
        [*jupyter_lab(argv, port, token), "--LabRun.start_pool=False"],
        tmp_path,
        service_env(tmp_path),
    )
    try:
        base = f"http://127.0.0.1:{port}/"
        service.wait_until(lambda: labrun_answers(base, token), "jupyter lab on PostgreSQL")
        with Client(base, token) as client:
            run = client.create_run(CreateRun(name="on postgres"))
        with sqlalchemy.create_engine(url).connect() as connection:
            names = connection.execute(sqlalchemy.text("select name from runs")).scalars().all()
        assert run.name in names
    finally:
        service.stop()


def test_the_dask_cluster_commands(tmp_path: Path, workdir: Path) -> None:
    scheduler_cmd, worker_cmd, lab_cmd = DASK_CLUSTER
    dask_port, lab_port, token = free_port(), free_port(), "t"
    address = f"tcp://127.0.0.1:{dask_port}"
    subs = {"8786": dask_port, "tcp://sched.example:8786": address}
    subs["http://lab.example:8888/"] = f"http://127.0.0.1:{lab_port}/"
    env = service_env(tmp_path)
    bindir = Path(sys.executable).parent
    services: list[Service] = []
    try:
        # dask scheduler, then a labrun worker joining it
        argv = [substitute(w, subs) for w in words(scheduler_cmd)]
        services.append(Service([str(bindir / "dask"), *argv[1:]], tmp_path, env))
        argv = [substitute(w, subs) for w in words(worker_cmd)]
        services.append(Service([sys.executable, "-m", "labrun.cli", *argv[1:]], tmp_path, env))

        # jupyter lab using that scheduler: its pool is the worker, and a job runs there
        argv = [substitute(w, subs) for w in words(lab_cmd)]
        lab = Service(
            jupyter_lab(argv, lab_port, token),
            tmp_path,
            env,
        )
        services.append(lab)
        base = f"http://127.0.0.1:{lab_port}/"
        lab.wait_until(lambda: labrun_answers(base, token), "jupyter lab on the team's scheduler")
        with Client(base, token) as client:
            lab.wait_until(
                lambda: (pool := client.pool()).state == "ready" and len(pool.workers) == 1,
                "the labrun worker in the pool",
            )
            assert client.pool().scheduler == address
        done = subprocess.run(
            [sys.executable, "-m", "labrun.cli", "submit", "train.ipynb", "--wait"],
            env={**env, "LABRUN_SERVER_URL": base, "LABRUN_TOKEN": token},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        for service in reversed(services):
            service.stop()
