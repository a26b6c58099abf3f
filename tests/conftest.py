"""Shared fixtures: an isolated home, real databases, and real labrun servers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything reads them: Jupyter, IPython, Dask and friends write under $HOME and
# /tmp by default. Every test session gets its own folders.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="labrun-tests-"))
for _name, _sub in {
    "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "LABRUN_DATA_DIR": "labrun-data",
}.items():
    os.environ[_name] = str(_SESSION_HOME / _sub)
for _name in ("LABRUN_SERVER_URL", "LABRUN_TOKEN", "LABRUN_RUN_ID", "LABRUN_DB_URL"):
    os.environ.pop(_name, None)


def _room_for_sockets() -> None:
    """One test process starts hundreds of kernel clients, and ZeroMQ's shared contexts
    allow 1,023 sockets at once (a client's heartbeat socket lingers until collected):
    past that, a new socket fails with "Too many open files". Raised before the first
    socket is made, with the process's open-file limit to match."""
    import resource

    import zmq
    import zmq.asyncio

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    for context in (zmq.Context.instance(), zmq.asyncio.Context.instance()):
        context.set(zmq.MAX_SOCKETS, 16384)


_room_for_sockets()

from support.pool import wait_for_pool
from support.postgres import PostgresServer
from support.server import LabrunServer

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the whole session."""
    server = PostgresServer.find()
    if server is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("LABRUN_REQUIRE_POSTGRES"):
            pytest.fail(message + "; LABRUN_REQUIRE_POSTGRES is set")
        pytest.skip(message)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite in a temp folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labrun.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict:
    """Jupyter Server with labrun, authentication required, SQLite in a temp folder."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"labrun": True},
            "allow_unauthenticated_access": False,
        },
        "LabRun": {
            "db_url": f"sqlite:///{tmp_path / 'server.db'}",
            "artifact_root": str(tmp_path / "artifacts"),
            "user": "alice",
            # The REST tests need no pool; tests/pool starts real ones.
            "start_pool": False,
        },
    }


@pytest.fixture
def labrun_server(tmp_path: Path) -> Iterator[LabrunServer]:
    """``labrun server`` in its own process, on a free port, with its own database."""
    server = LabrunServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    """``labrun server`` with its local pool (two CPU workers where there are two CPUs), every
    worker joined; one per test module, shared by its tests."""
    server = LabrunServer(tmp_path_factory.mktemp("pool-server"), pool=True)
    server.start()
    wait_for_pool(server, workers=min(2, os.cpu_count() or 1))
    yield server
    server.stop()
