"""Kernels forked from a process that has already imported ipykernel.

A fresh ``python -m ipykernel_launcher`` spends about 0.35 s of CPU importing IPython,
ipykernel, zmq and tornado before it can answer. On a busy worker that is most of what a
short notebook job costs. A *zygote* imports all that once; each kernel is a ``fork()`` of
it that only builds its shell and binds its sockets.

The zygote is single-threaded and creates no zmq context, event loop or thread before it
forks, so a child starts as clean as a fresh process, with these differences handled here:

- the child gets its own session (``killpg`` on it reaches the kernel and what it started),
  the job's environment and working directory, and fresh seeds for ``random`` (a fork
  would otherwise hand every kernel the same random sequence);
- ipykernel watches the zygote, its parent, and exits if the zygote dies (as a launched
  kernel watches the worker), and the zygote exits when the worker closes its pipe;
- the zygote reaps its children, so a dead kernel is seen as dead at once.

:class:`ForkingProvisioner` plugs this into jupyter_client: a kernel manager using it starts,
signals, interrupts and kills its kernel as usual. A kernelspec that does not run
``ipykernel_launcher`` with this Python is launched the ordinary way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelConnectionInfo

logger = logging.getLogger("labrun.executor")

# Imported by the zygote before it forks: what every kernel imports as it starts (the
# debugger, debugpy and pydevd included). None of these start a thread when imported.
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.interactiveshell",
    "IPython.core.completer",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "jupyter_client.session",
    "tornado.platform.asyncio",
    "tornado.queues",
    "sqlite3",
)


class Zygote:
    """The worker's handle on one zygote process: ask it for kernels, stop it."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "labrun.executor.forking", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # The kernels' stderr, like a launched kernel's, goes where the worker's does.
            stderr=None,
            start_new_session=True,
        )
        ready = self._read()
        if ready.get("ready") is not True:
            self.close()
            raise RuntimeError(f"the kernel zygote did not start: {ready}")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            return {"error": f"the zygote exited ({self.process.poll()})"}
        return dict(json.loads(line))

    def fork(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        """Start a kernel with ipykernel's arguments ``argv``; its pid."""
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd}) + "\n"
        with self._lock:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(request.encode())
                self.process.stdin.flush()
            except OSError as err:
                raise RuntimeError(f"the kernel zygote is gone: {err}") from None
            answer = self._read()
        if "pid" not in answer:
            raise RuntimeError(f"the kernel zygote could not fork: {answer.get('error')}")
        return int(answer["pid"])

    def close(self) -> None:
        """Stop the zygote; kernels it started exit once they see it gone."""
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class ForkedKernel:
    """A forked kernel as jupyter_client's provisioner sees a ``Popen``: it is the zygote's
    child, not ours, so liveness comes from the process table, not ``waitpid``."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                gone = psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                # The zygote reaped it and kept the status: dead is all we need.
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def ipykernel_arguments(cmd: list[str]) -> list[str] | None:
    """ipykernel's own arguments if ``cmd`` launches it with this Python, else None."""
    launches_ipykernel = len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"]
    if launches_ipykernel and Path(cmd[0]).resolve() == Path(sys.executable).resolve():
        return cmd[3:]
    return None


class ForkingProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, launching ipykernel from a :class:`Zygote`."""

    zygote: Zygote | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        arguments = ipykernel_arguments(cmd)
        zygote = self.zygote
        if arguments is None or zygote is None or not zygote.alive:
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        # ipykernel exits if its parent, the zygote, goes away.
        arguments = [*arguments, f"--IPKernelApp.parent_handle={zygote.pid}"]
        pid = zygote.fork(arguments, env, cwd)
        self.process = ForkedKernel(pid)  # type: ignore[assignment]  # Popen-like
        self.pid = pid
        self.pgid = pid  # the child called setsid()
        self.cwd = cwd
        return self.connection_info


# --- the zygote process -----------------------------------------------------------------


def _reap(signum: int, frame: Any) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_kernel(request: dict[str, Any]) -> None:
    """In the forked child: turn into the kernel ``request`` asks for. Never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Off the zygote's pipes: stdin from nothing, stdout where stderr goes.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # As in a fresh Python: the zygote ignores ^C meant for the worker.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import random

        random.seed()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance(argv=request["argv"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - the kernel's failure, reported where it can be
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def main(preload: list[str]) -> None:
    # As ipykernel_launcher does: the start folder is not an import path for kernels.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    import importlib

    for name in preload:
        importlib.import_module(name)
    # A fork copies threads' locks but not the threads: there must be none to copy.
    if threading.active_count() != 1:
        raise RuntimeError(f"a preloaded module started threads: {threading.enumerate()}")
    signal.signal(signal.SIGCHLD, _reap)
    # The worker's interrupt is for the worker, not the zygote.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer

    def answer(message: dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    answer({"ready": True})
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            pid = os.fork()
        except (ValueError, OSError) as err:
            answer({"error": str(err)})
            continue
        if pid == 0:
            _become_kernel(request)
        answer({"pid": pid})
    # The worker closed the pipe: it is stopping, and waits for this process. Nothing is
    # left to clean up, and a normal exit's garbage collection of everything the zygote
    # imported would cost a second of a starved CPU.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
