"""Warm kernels forked from a zygote: real ipykernel processes, started, used and stopped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager
from support.waiting import wait_for

from labrun.executor.forking import ForkingProvisioner, ipykernel_arguments
from labrun.executor.kernels import KernelPool

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[KernelPool]:
    pool = KernelPool(2, cwd=tmp_path, env={**os.environ, "LABRUN_TEST_MARK": "zygote"})
    pool.start()
    yield pool
    pool.close()


def value(pool: KernelPool, km: AsyncKernelManager, expression: str) -> Any:
    """``expression`` evaluated in the kernel, as its repr read back."""
    reply = pool.run_code(km, f"_labrun_test = {expression}")
    assert reply["status"] == "ok", reply
    client = km.client()
    client.start_channels()
    try:
        result = pool.call(
            client.execute_interactive(
                "", user_expressions={"v": "_labrun_test"}, store_history=False, timeout=10
            ),
            15,
        )
    finally:
        client.stop_channels()
    return eval(result["content"]["user_expressions"]["v"]["data"]["text/plain"])


def test_kernels_are_forked_from_the_zygote_each_a_fresh_process(
    pool: KernelPool, tmp_path: Path
) -> None:
    first, second = pool.acquire(), pool.acquire()
    try:
        for km in (first, second):
            assert isinstance(km.provisioner, ForkingProvisioner)
        zygote = pool._zygote
        assert zygote is not None
        pids = [value(pool, km, "__import__('os').getpid()") for km in (first, second)]
        assert len(set(pids)) == 2
        for pid in pids:
            kernel = psutil.Process(pid)
            # A child of the zygote, leading its own process group (killpg reaches it all)
            assert kernel.ppid() == zygote.pid
            assert os.getpgid(pid) == pid
        # The environment and folder it was started with; not the zygote's start folder
        assert value(pool, first, "__import__('os').environ['LABRUN_TEST_MARK']") == "zygote"
        assert value(pool, first, "__import__('os').getcwd()") == str(tmp_path)
        # Random state is not inherited from the zygote: every kernel draws its own
        draws = [value(pool, km, "__import__('random').random()") for km in (first, second)]
        assert draws[0] != draws[1]
    finally:
        pool.discard(first)
        pool.discard(second)


def test_a_forked_kernel_is_interrupted_and_killed_like_a_launched_one(pool: KernelPool) -> None:
    km = pool.acquire()
    pid = value(pool, km, "__import__('os').getpid()")
    client = km.client()
    client.start_channels()
    try:
        msg_id = client.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")

        async def output(msg_type: str) -> dict[str, Any]:
            """The first message of ``msg_type`` the execution sends."""
            get = client.get_shell_msg if msg_type == "execute_reply" else client.get_iopub_msg
            while True:
                msg = await get(timeout=30)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == msg_type:
                    return dict(msg["content"])

        # Once the cell runs (an idle kernel ignores SIGINT), interrupt it
        assert pool.call(output("stream"), 40)["text"] == "sleeping\n"
        pool.interrupt(km)
        content = pool.call(output("execute_reply"), 40)
        assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()
    # Still alive after the interrupt; gone after a kill, and seen as gone
    assert pool.call(km.is_alive(), 10)
    pool.kill(km)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not pool.call(km.is_alive(), 10)


def test_kernels_end_with_their_zygote_and_a_new_zygote_takes_over(pool: KernelPool) -> None:
    km = pool.acquire()
    pid = value(pool, km, "__import__('os').getpid()")
    old = pool._zygote
    assert old is not None
    old.process.kill()
    old.process.wait(10)
    # ipykernel watches its parent: an orphaned kernel exits by itself
    wait_for(lambda: not psutil.pid_exists(pid), what="the orphaned kernel to exit")
    # The pool notices when it starts the next kernel, and forks from a new zygote
    fresh = pool.acquire()
    fresh_pid = value(pool, fresh, "__import__('os').getpid()")
    assert pool._zygote is not old and pool._zygote is not None and pool._zygote.alive
    assert psutil.Process(fresh_pid).ppid() in (pool._zygote.pid, os.getpid())
    pool.discard(km)
    pool.discard(fresh)


def test_without_forking_kernels_are_launched_as_before(tmp_path: Path) -> None:
    pool = KernelPool(1, cwd=tmp_path, fork=False)
    pool.start()
    try:
        km = pool.acquire()
        assert not isinstance(km.provisioner, ForkingProvisioner)
        assert psutil.Process(value(pool, km, "__import__('os').getpid()")).ppid() == os.getpid()
        pool.discard(km)
    finally:
        pool.close()


def test_only_ipykernel_with_this_python_is_forked() -> None:
    assert ipykernel_arguments([sys.executable, "-m", "ipykernel_launcher", "-f", "c.json"]) == [
        "-f",
        "c.json",
    ]
    assert (
        ipykernel_arguments(["/usr/bin/python3.9", "-m", "ipykernel_launcher", "-f", "c"]) is None
    )
    assert ipykernel_arguments(["R", "--slave", "-e", "IRkernel::main()", "c.json"]) is None
