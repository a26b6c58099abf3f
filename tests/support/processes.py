"""Process trees a test starts and must see gone, and CPU hogs to starve them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from .waiting import wait_for

# How a stop arrives: a SIGTERM to the main process (`kill PID`, a service manager), a
# terminal's Ctrl-C (a SIGINT to every process of its process group), and a SIGTERM to
# every process at once (`kill -- -PGID`, systemd's default for a service).
STOPS = ["sigterm-to-process", "sigint-to-group", "sigterm-to-group"]


@contextmanager
def cpu_hog(count: int = 2) -> Iterator[None]:
    """``count`` busy loops beside the test, to saturate the cores; killed at the end."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def descendants(pid: int) -> list[psutil.Process]:
    """Every process ``pid`` started, and what they started, to the last kernel."""
    return list(psutil.Process(pid).children(recursive=True))


def running(process: psutil.Process) -> bool:
    """Still running: a zombie has exited and only waits for its parent to reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(processes: list[psutil.Process]) -> list[str]:
    out = []
    for process in processes:
        try:
            out.append(f"{process.pid}: {' '.join(process.cmdline())[:150]}")
        except psutil.Error:
            out.append(f"{process.pid}: (gone)")
    return out


def stop(process: subprocess.Popen[bytes], how: str, timeout: float = 60) -> tuple[int, float]:
    """Stop ``process`` (started in a session of its own) the way ``how`` says; its exit
    status and the seconds it took to exit. Kills its group if it outlives ``timeout``."""
    started = time.monotonic()
    if how == "sigterm-to-process":
        process.send_signal(signal.SIGTERM)
    elif how == "sigint-to-group":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"{process.args!r} did not stop in {timeout:.0f} s") from None
    return code, time.monotonic() - started


def left_running(processes: list[psutil.Process], timeout: float = 60) -> list[psutil.Process]:
    """Those of ``processes`` still running after waiting up to ``timeout`` for them to
    go (none, normally, in well under a second); each is killed so none outlives the test."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(running(p) for p in processes), timeout, "processes to end")
    left = [p for p in processes if running(p)]
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    return left
