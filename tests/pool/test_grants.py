"""GPU %%mlrun cells and sessions under the rules jobs follow: admitted by the scheduler of
record (a grant), held while they run, given back at their end or at %mlrun_release.

A local pool with two GPUs (fake NVML, ``LABRUN_FAKE_GPUS=2``) and a limit of one GPU per
user: a user's second GPU cell waits for their first, though a GPU is free, as a second
GPU job would.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kernel import Kernel
from support.pool import labrun_cli, wait_for_pool
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.kernel_magics.grants import KernelGrants
from labrun.models import GrantStatus, RequestGrant

pytestmark = pytest.mark.timeout(300)

# A cell that holds its GPU until the test lets it go (the worker shares this file system).
HOLD = """%%mlrun --gpus 1 --no-wait --name {name}
import pathlib, time
while not pathlib.Path({flag!r}).exists():
    time.sleep(0.05)
held = {name!r}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    server = LabrunServer(
        tmp_path_factory.mktemp("grants"),
        pool=True,
        options=["--LabRun.max_gpus_per_user=1"],
        env={"LABRUN_FAKE_GPUS": "2"},
    )
    server.start()
    try:
        wait_for_pool(server, workers=2)
        yield server
    finally:
        server.stop()


def grants(client: Client) -> dict[str, str]:
    listed = client.request("GET", "/grants").json()["grants"]
    return {grant["key"]: grant["status"] for grant in listed}


def test_a_users_second_gpu_cell_waits_for_their_first_and_runs_when_it_ends(
    server: LabrunServer, tmp_path: Path
) -> None:
    first, second = (Kernel(tmp_path, server.env) for _ in range(2))
    flag = tmp_path / "release-first"
    try:
        for kernel in (first, second):
            kernel.ok("%load_ext labrun")
        with Client(server.url, server.token) as client:
            # Given a cell that holds one GPU of the two
            first.ok(HOLD.format(name="first", flag=str(flag)))
            key = first.value("_mlrun.key")
            wait_for(lambda: first.value("_mlrun.status") == "running", what="the first cell")
            assert grants(client) == {key: "granted"}

            # When the same user's second GPU cell asks, with a GPU free but their limit held
            msg_id = second.client.execute("%%mlrun --gpus 1 --name second\nanswer = 6 * 7")

            # Then it waits, and says why
            while True:
                msg = second.client.get_iopub_msg(timeout=90)
                if msg["parent_header"].get("msg_id") == msg_id:
                    assert msg["msg_type"] != "error", msg["content"]
                    if "waits for 1 GPU" in msg["content"].get("text", ""):
                        break
            assert sorted(grants(client).values()) == ["granted", "waiting"]
            shown = labrun_cli(server, "pool").stdout
            assert f"'s cell {key[:8]} holds 1 GPU(s)" in shown
            assert "waits for 1 GPU(s) (queue default" in shown

            # And once the first cell ends, its GPU goes to the second, which runs
            flag.touch()
            first.ok("_mlrun.result()")
            assert first.value("held") == "first"
            while (reply := second.client.get_shell_msg(timeout=120))["parent_header"].get(
                "msg_id"
            ) != msg_id:
                pass
            assert reply["content"]["status"] == "ok", reply["content"]
            assert second.value("answer") == 42
            # and nothing holds a GPU after both ended
            wait_for(lambda: not grants(client), what="both grants to go back")
    finally:
        flag.touch()
        first.close()
        second.close()


def test_a_session_holds_its_gpu_until_released_and_a_dead_kernels_grant_goes_back(
    server: LabrunServer, tmp_path: Path
) -> None:
    kernel = Kernel(tmp_path, server.env)
    flag = tmp_path / "never"
    try:
        kernel.ok("%load_ext labrun")
        with Client(server.url, server.token) as client:
            # A GPU session holds its grant between cells
            kernel.ok("%%mlrun --gpus 1 --session s1\nx = 1")
            kernel.ok("%%mlrun --session s1\ny = x + 1")
            (key,) = grants(client)
            assert grants(client)[key] == "granted"
            # until %mlrun_release gives it back
            kernel.ok("%mlrun_release s1")
            wait_for(lambda: not grants(client), what="the session's grant to go back")

            # A kernel killed while its cell holds a GPU: the scheduler of record releases
            # the grant once the kernel's connection to the pool is gone.
            kernel.ok(HOLD.format(name="orphan", flag=str(flag)))
            wait_for(lambda: grants(client), what="the orphan's grant")
            kernel.manager.signal_kernel(signal.SIGKILL)
            wait_for(lambda: not grants(client), timeout=120, what="the dead kernel's grant")
    finally:
        flag.touch()
        kernel.close()


def test_bad_grant_requests_say_what_was_wrong(server: LabrunServer) -> None:
    with Client(server.url, server.token) as client:
        for body, status, says in [
            ({"key": "k" * 10, "gpus": 3}, 400, "no worker offers 3 GPUs"),
            ({"key": "k" * 10, "gpus": 1, "queue": "nope"}, 404, "no queue named 'nope'"),
            ({"key": "short", "gpus": 1}, 400, "key"),
            ({"key": "k" * 10, "gpus": 0}, 400, "gpus"),
        ]:
            response = client._http.post("/grants", json=body)
            assert response.status_code == status, (body, response.text)
            assert says in response.json()["message"], response.text
        # A grant is its user's: released by its key, answered again by its key
        granted = client.request_grant(RequestGrant(key="mine-1234", gpus=1))
        assert granted.status == GrantStatus.granted
        again = client.request_grant(RequestGrant(key="mine-1234", gpus=1))
        assert again.id == granted.id
        assert client.release_grants(["mine-1234"]).grants == []
        missing = client._http.post("/grants/release", json={"keys": ["nobody-1234"]})
        assert missing.status_code == 404, missing.text


def test_a_cells_grant_goes_back_with_the_next_gpu_cells_request(server: LabrunServer) -> None:
    with Client(server.url, server.token) as client:
        sent: list[str] = []
        client._http.event_hooks["request"].append(
            lambda request: sent.append(f"{request.method} {request.url.path.split('/v1')[-1]}")
        )
        # (A long wait for the next request: it is surely the one that carries the grant.)
        kernel = KernelGrants(client, "a-kernels-pool-client", carry=60)
        kernel.acquire("cell-one-0001", 1, kind="cell", queue=None, what="the cell")
        # Given a cell that ended (its grant waits to go back with the next cell's request)
        kernel.release("cell-one-0001")
        assert grants(client) == {"cell-one-0001": "granted"}
        # When the next GPU cell asks at once, under this user's limit of one GPU
        kernel.acquire("cell-two-0002", 1, kind="cell", queue=None, what="the cell")
        # Then its request gave the first one's GPU back and took it: one request each
        assert grants(client) == {"cell-two-0002": "granted"}
        assert [line for line in sent if line.startswith("POST")] == ["POST /grants"] * 2
        # A session's grant goes back at once, with a request of its own
        kernel.release("cell-two-0002", at_once=True)
        wait_for(lambda: not grants(client), what="the grant to go back")
        assert sent[-1] == "GET /grants" and "POST /grants/release" in sent
