"""A server whose store cannot be used stops at once and says why in one line.

`labrun server` and `jupyter lab` are run for real on a database from a newer labrun, a data
folder that cannot be created, and a read-only database (the tests run as root, where file
permissions stop no write: the file is made immutable, or opened with SQLite's ``mode=ro``).
Each must exit non-zero with the reason as its last line, not go on serving 404 pages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from support.lab import JupyterLab
from support.postgres import free_port

from labrun.jupyter_ext.store import Database, Store, database

pytestmark = pytest.mark.timeout(300)


def newer_database(path: Path) -> str:
    """A database stamped with a schema revision this labrun does not know."""
    url = f"sqlite:///{path}"
    engine = database.make_engine(url)
    database.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    engine.dispose()
    return url


def used_database(path: Path) -> str:
    """A database a server has used: what a first start writes is there already, so only
    a write probe finds out that it cannot be written."""
    url = f"sqlite:///{path}"
    db = Database(url)
    database.check_schema(db.engine, auto_upgrade=True)
    assert Store(db, artifact_root=str(path.parent / "artifacts")).tokens.secret
    db.close()
    return url


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A used database file that not even root can write (``chattr +i``)."""
    path = tmp_path / "immutable" / "labrun.db"
    path.parent.mkdir()
    used_database(path)
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def labrun_server(tmp_path: Path, options: list[str]) -> list[str]:
    return [
        *(sys.executable, "-m", "labrun.cli", "server", "--port", str(free_port())),
        f"--ServerApp.root_dir={tmp_path}",
        "--LabRun.start_pool=False",
        *options,
    ]


def start(
    which: str, tmp_path: Path, options: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Start ``labrun server`` or ``jupyter lab`` and wait for it to exit (it must)."""
    base = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "LABRUN_DATA_DIR": str(tmp_path / "data"),
    }
    if which == "labrun server":
        command = labrun_server(tmp_path, options)
        environment = {**base, **env}
    else:
        command, environment = JupyterLab(tmp_path / "lab", pool=False, env=env).command()
        command = [*command, *options]
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def assert_stopped_saying(done: subprocess.CompletedProcess[str], *reasons: str) -> None:
    output = done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, output[-3000:]
    assert lines[-1].startswith("Error: labrun cannot start: "), output[-3000:]
    for reason in reasons:
        assert reason in lines[-1], lines[-1]
    assert "Traceback" not in output and "AttributeError" not in output, output[-3000:]


SERVERS = ["labrun server", "jupyter lab"]


@pytest.mark.parametrize("which", SERVERS)
def test_a_database_from_a_newer_labrun_stops_the_server(which: str, tmp_path: Path) -> None:
    url = newer_database(tmp_path / "newer.db")
    done = start(which, tmp_path, [f"--LabRun.db_url={url}"], {})
    assert_stopped_saying(done, "'ffff9999', written by a newer labrun", "pip install -U labrun")
    # Never touched
    assert database.schema_revisions(database.make_engine(url))[0] == "ffff9999"


@pytest.mark.parametrize("which", SERVERS)
def test_a_data_folder_that_cannot_be_created_stops_the_server(which: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way of the data folder")
    data = tmp_path / "a-file" / "labrun"
    done = start(which, tmp_path, [], {"LABRUN_DATA_DIR": str(data)})
    assert_stopped_saying(done, f"cannot create the folder '{data}'", "LABRUN_DATA_DIR")


@pytest.mark.parametrize("which", SERVERS)
def test_an_immutable_database_file_stops_the_server(
    which: str, tmp_path: Path, immutable: Path
) -> None:
    done = start(which, tmp_path, [f"--LabRun.db_url=sqlite:///{immutable}"], {})
    assert_stopped_saying(done, "cannot write to the database", "readonly")


def test_a_read_only_database_url_stops_the_server(tmp_path: Path) -> None:
    used_database(tmp_path / "labrun.db")
    url = f"sqlite:///file:{tmp_path / 'labrun.db'}?mode=ro&uri=true"
    done = start("labrun server", tmp_path, [f"--LabRun.db_url={url}"], {})
    assert_stopped_saying(done, "cannot write to the database", "readonly")


def test_a_wrong_roles_setting_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    roles = {"lead": ["carol"]}  # a list where each lead's projects belong
    (config / "jupyter_server_config.json").write_text(json.dumps({"LabRun": {"roles": roles}}))
    done = start("labrun server", tmp_path, [], {"JUPYTER_CONFIG_DIR": str(config)})
    assert_stopped_saying(
        done, "c.LabRun.roles is not valid (lead: Input should be a valid dictionary)"
    )


def labrun_db(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labrun.cli", "db", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_upgrade_refuses_a_newer_database_in_one_line(tmp_path: Path) -> None:
    url = newer_database(tmp_path / "newer.db")
    head = database.schema_revisions(database.make_engine(url))[1]
    done = labrun_db("upgrade", "--db-url", url)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        (
            f"Error: the database {url} has schema revision 'ffff9999', written by a newer "
            f"labrun (this one knows up to {head!r}); upgrade labrun (`pip install -U labrun`) "
            "or point c.LabRun.db_url at another database"
        )
    ]
    assert database.schema_revisions(database.make_engine(url))[0] == "ffff9999"


def test_db_upgrade_on_a_folder_that_cannot_be_created_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    done = labrun_db("upgrade", "--db-url", f"sqlite:///{tmp_path / 'a-file' / 'labrun.db'}")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"Error: cannot create the folder '{tmp_path / 'a-file'}'"), line
