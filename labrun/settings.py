"""Names of the settings shared by the server, kernels and workers.

The server reads traitlets (``c.LabRun.db_url``); kernels and workers read the same
setting from an environment variable with the ``LABRUN_`` prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

SERVER_URL = "LABRUN_SERVER_URL"
# A file holding the server's URL, read again when that server cannot be reached: a job's
# kernel follows its worker to the server that dispatches now.
SERVER_URL_FILE = "LABRUN_SERVER_URL_FILE"
TOKEN = "LABRUN_TOKEN"
RUN_ID = "LABRUN_RUN_ID"
PROJECT = "LABRUN_PROJECT"
SPOOL_DIR = "LABRUN_SPOOL_DIR"
DATA_DIR = "LABRUN_DATA_DIR"
# "0" on a worker: launch every kernel as a new process instead of forking it (executor.forking)
FORK_KERNELS = "LABRUN_FORK_KERNELS"

API_PREFIX = "/labrun/api/v1"
API_VERSION = 1


def data_dir() -> Path:
    """Where labrun keeps its embedded database, artifacts and spool files."""
    configured = os.environ.get(DATA_DIR)
    return Path(configured) if configured else Path(jupyter_data_dir()) / "labrun"


def spool_dir() -> Path:
    """Where metric points wait while the server cannot be reached."""
    configured = os.environ.get(SPOOL_DIR)
    return Path(configured) if configured else data_dir() / "spool"
