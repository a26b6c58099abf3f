"""A real kernel with the magics loaded, talking to tests/conftest.py's pool_server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.kernel import Kernel
from support.server import LabrunServer


@pytest.fixture(scope="module")
def kernel(pool_server: LabrunServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A notebook's kernel, talking to the server like one JupyterLab started."""
    folder = tmp_path_factory.mktemp("notebook")
    kernel = Kernel(folder, {**pool_server.env, "LABRUN_PROJECT": "magics"})
    kernel.ok("%load_ext labrun")
    yield kernel
    kernel.close()
