"""The pool's trust model over real processes: a Dask scheduler that requires TLS, a
`labrun worker` and a labrun server, all configured through Dask's own environment variables
as a team would; what a notebook job's kernel holds; the clients the scheduler refuses; and
the local pool, which speaks TLS when Dask's config requires encryption."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask.config
import pytest
from distributed import Client as DaskClient
from distributed.security import Security
from support.kernel import Kernel
from support.notebooks import write_notebook
from support.pool import labrun_cli, wait_for_pool
from support.postgres import free_port
from support.server import LabrunServer, stop_group
from support.tls import PoolCertificates, pool_certificates
from support.waiting import wait_for

from labrun.client import Client
from labrun.executor.cluster import close_cluster, local_cluster
from labrun.executor.plugins import POOL_TOKEN_KEY
from labrun.executor.security import pool_security
from labrun.jupyter_ext.store import Database, Store
from labrun.models import CreateRun, RunStatus


@dataclass
class TlsPool:
    certificates: PoolCertificates
    address: str
    scheduler_log: Path
    server: LabrunServer


@pytest.fixture(scope="module")
def tls_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPool]:
    """A scheduler requiring TLS, one `labrun worker tls://...` and a server (alice's)."""
    directory = tmp_path_factory.mktemp("tls")
    certificates = pool_certificates(directory / "certs")
    env = {**os.environ, **certificates.env}
    address = f"tls://127.0.0.1:{free_port()}"
    scheduler_log = directory / "scheduler.log"
    scheduler = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_scheduler"),
            *("--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]),
            *("--protocol", "tls", "--no-dashboard"),
        ],
        stdout=scheduler_log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "labrun.cli", "worker", address, "--gpus", "0"),
            # Two threads: the job, and the %%mlrun cell it sends to the pool.
            *("--nthreads", "2", "--name", "tls-worker"),
            *("--local-directory", str(directory / "worker")),
        ],
        stdout=(directory / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    server = LabrunServer(
        directory / "server",
        options=[f"--LabRun.dask_scheduler={address}"],
        env={**certificates.env, "LABRUN_USER": "alice"},
    )
    try:
        server.start()
        wait_for_pool(server, workers=1)
        yield TlsPool(certificates, address, scheduler_log, server)
    finally:
        server.stop()
        stop_group(worker)
        stop_group(scheduler)


def member(certificates: PoolCertificates) -> Security:
    """A client holding a certificate of the pool's CA (what the test itself uses)."""
    return Security(
        require_encryption=True,
        tls_ca_file=str(certificates.ca),
        tls_client_cert=str(certificates.cert),
        tls_client_key=str(certificates.key),
    )


def test_a_notebook_job_runs_over_tls_with_only_its_own_runs_token(
    tls_pool: TlsPool, tmp_path: Path
) -> None:
    server = tls_pool.server
    with Client(server.url, server.token) as client:
        # The server and the worker joined the pool over TLS
        pool = client.pool()
        assert pool.scheduler == tls_pool.address
        assert [w.address.split("://")[0] for w in pool.workers] == ["tls"]

        # Given bob's run, and the pool's token, which a holder of a pool certificate
        # reads from the scheduler
        store = Store(Database(server.db_url), artifact_root=str(tmp_path / "artifacts"))
        bobs_token = store.tokens.issue(user="bob", name="bob", scope="user", lifetime=600).token
        store.db.close()
        with Client(server.url, bobs_token) as bob:
            bobs_run = bob.create_run(CreateRun(name="bob's")).id
        with DaskClient(tls_pool.address, security=member(tls_pool.certificates)) as dask:
            pool_token = dask.get_metadata(POOL_TOKEN_KEY)["token"]

        # When alice's notebook job looks at what its kernel holds, tries to rename bob's
        # run with it, and sends a %%mlrun cell to the pool
        digest = hashlib.sha256(pool_token.encode()).hexdigest()
        notebook = write_notebook(
            tmp_path / "inside.ipynb",
            "import base64, hashlib, json, os\n"
            "from labrun.client import Client\n"
            "from labrun.errors import LabrunError\n"
            "from labrun.models import UpdateRun\n"
            "token = os.environ['LABRUN_TOKEN']\n"
            "payload = token.split('.')[1]\n"
            "claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))\n"
            "print('token scope', claims['s'], claims.get('r'))\n"
            "values = {hashlib.sha256(v.encode()).hexdigest() for v in os.environ.values()}\n"
            f"print('pool token in env:', {digest!r} in values)\n"
            "with open('/proc/self/environ', 'rb') as environ:\n"
            "    print('own token in /proc environ:', token.encode() in environ.read())\n"
            "try:\n"
            f"    Client().update_run({bobs_run}, UpdateRun(name='taken'))\n"
            "    print('renamed bobs run')\n"
            "except LabrunError as err:\n"
            "    print('bobs run refused', err.status)",
            "%load_ext labrun",
            "%%mlrun --name tls-cell\nanswer = 6 * 7",
            "print('back', answer)",
        )
        result = labrun_cli(server, "submit", str(notebook), "--wait", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        run = client.list_runs(q="inside", kind="notebook").runs[0]
        log = "".join(e.text for e in client.logs(run.id).entries)
        assert run.status == RunStatus.completed, log

        # Then its kernel held its own run's token, not the pool's, and not where another
        # process reads a process's environment
        assert f"token scope run {run.id}" in log
        assert "pool token in env: False" in log
        assert "own token in /proc environ: False" in log
        # That token could not change bob's run
        assert "bobs run refused 403" in log
        assert client.get_run(bobs_run).name == "bob's"
        # And the cell went to the pool over TLS from the job's kernel
        (cell,) = client.list_runs(q="tls-cell").runs
        assert cell.status == RunStatus.completed and cell.parent_id == run.id
        assert "back 42" in log


def test_a_notebooks_kernel_sends_cells_over_tls_once_it_has_the_pools_settings(
    tls_pool: TlsPool, tmp_path: Path
) -> None:
    # A notebook's kernel, as JupyterLab starts one, without Dask's TLS settings
    kernel = Kernel(tmp_path, tls_pool.server.env)
    try:
        kernel.ok("%load_ext labrun")

        # Its first cell says which settings it lacks
        refused = kernel.execute("%%mlrun --name no-tls\n1 + 1")
        assert not refused.ok
        assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in refused.error
        assert "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT" in refused.error

        # Given them, as its Jupyter server's environment would pass them down
        settings = tls_pool.certificates.env
        kernel.ok(f"import dask.config, os\nos.environ.update({settings!r})\ndask.config.refresh()")

        # Its cells run on the pool over TLS
        done = kernel.ok("%%mlrun --name over-tls\nanswer = 6 * 7")
        assert kernel.value("answer") == 42, done.outputs
    finally:
        kernel.close()


def test_the_scheduler_refuses_clients_without_a_certificate_of_its_ca(
    tls_pool: TlsPool,
) -> None:
    plain = tls_pool.address.replace("tls://", "tcp://")
    certificates = tls_pool.certificates
    intruder = Security(
        require_encryption=True,
        tls_ca_file=str(certificates.ca),  # it trusts the scheduler: the refusal is the scheduler's
        tls_client_cert=str(certificates.other_cert),
        tls_client_key=str(certificates.other_key),
    )

    # A plain tcp:// client
    with pytest.raises(OSError, match=r"Connection reset|Stream is closed|EOF"):
        DaskClient(plain, security=Security(require_encryption=False), timeout=10)
    # A client whose certificate another CA signed
    with pytest.raises(OSError, match=r"SSL|EOF|Stream is closed"):
        DaskClient(tls_pool.address, security=intruder, timeout=10)

    # Both refused in the scheduler's TLS handshake
    def refusals() -> list[str]:
        return [
            line
            for line in tls_pool.scheduler_log.read_text().splitlines()
            if "TLS handshake failed" in line
        ]

    wait_for(lambda: len(refusals()) >= 2, what="the scheduler to log both refusals")
    said = "\n".join(refusals())
    assert "WRONG_VERSION_NUMBER" in said and "CERTIFICATE_VERIFY_FAILED" in said


def test_a_worker_refuses_a_plain_address_where_the_config_requires_tls(tmp_path: Path) -> None:
    certificates = pool_certificates(tmp_path / "certs")
    result = subprocess.run(
        [sys.executable, "-m", "labrun.cli", "worker", "tcp://127.0.0.1:9", "--gpus", "0"],
        env={**os.environ, **certificates.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # One line that says what to give instead, before connecting anywhere
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: Dask's config requires encryption (distributed.comm.require-encryption), but "
        "the pool's scheduler is 'tcp://127.0.0.1:9': give its tls:// address "
        "(tls://127.0.0.1:9), with the scheduler started under the same TLS settings"
    )


def test_the_local_pool_speaks_tls_where_the_config_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Dask's TLS settings in the environment (its subprocesses read them too)
    certificates = pool_certificates(tmp_path / "certs")
    for name, value in certificates.env.items():
        monkeypatch.setenv(name, value)
    dask.config.refresh()

    async def start_and_use() -> tuple[str, int]:
        security = pool_security("client", "scheduler", "worker")
        cluster, _ = local_cluster(
            cpu_workers=1, local_directory=str(tmp_path / "dask"), security=security
        )
        try:
            await cluster
            async with DaskClient(cluster, asynchronous=True, security=security) as client:
                answer = await client.submit(sum, [40, 2])
            # A client without the pool's certificate is refused
            with pytest.raises(OSError):
                await DaskClient(
                    cluster.scheduler_address.replace("tls://", "tcp://"),
                    asynchronous=True,
                    security=Security(require_encryption=False),
                    timeout=10,
                )
            return cluster.scheduler_address, answer
        finally:
            await close_cluster(cluster)

    try:
        # When the server's local pool starts, its scheduler listens on tls:// and works
        address, answer = asyncio.run(start_and_use())
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    assert address.startswith("tls://127.0.0.1:") and answer == 42
