"""Several hosts on one machine: Linux network namespaces joined by veth links to a bridge.

Each host of a :class:`Network` is a namespace with one link (``eth0``) to a bridge that
lives in a namespace of its own, on a private /24; the test's own (root) namespace joins
the bridge too, as an admin's machine would, so the test reaches the hosts' services. A
host's link can be cut and restored (its end at the bridge goes down: a pulled cable, no
reset for its connections). Everything is named ``lrnh-<random>-...`` so tests running at
once never share a namespace, and :meth:`Network.close` removes it all, processes first.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), as CI runs: :func:`network` skips otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIX = "lrnh-"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make network namespaces here, or None when it can."""
    probe = f"{PREFIX}probe-{secrets.token_hex(3)}"
    try:
        made = ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return (
            f"cannot create a network namespace ({made.stderr.strip()}); these tests need "
            "root with CAP_NET_ADMIN and CAP_SYS_ADMIN, as CI runs them"
        )
    ip("netns", "delete", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 that no route of this machine's overlaps."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    used = []
    for line in routes.splitlines():
        with suppress(ValueError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    while True:
        net = ipaddress.IPv4Network(f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net


@dataclass
class Host:
    """One namespace on the network."""

    name: str  # the role the test gives it: "server", "scheduler", "worker-a"
    netns: str
    address: str
    bridge_link: str  # its link's end at the bridge, what a cut takes down


class Network:
    """A bridge and hosts on it; :meth:`close` removes everything (also after a failure)."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = f"{PREFIX}{secrets.token_hex(2)}"
        subnet = _free_subnet()
        addresses = list(subnet.hosts())
        self.prefixlen = subnet.prefixlen
        self.bridge_ns = f"{self.tag}-bridge"
        self.root_link = f"{self.tag}-h"
        self.root_address = str(addresses[0])  # this process's own namespace
        self.hosts = {
            name: Host(name, f"{self.tag}-{name}", str(addresses[i + 1]), f"{self.tag}-{i}")
            for i, name in enumerate(hosts)
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def create(self) -> None:
        ip("netns", "add", self.bridge_ns)
        self._in(self.bridge_ns, "link", "add", "br0", "type", "bridge")
        self._in(self.bridge_ns, "link", "set", "br0", "up")
        # The root namespace's link: a veth whose other end plugs into the bridge.
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root",
           "netns", self.bridge_ns)  # fmt: skip
        self._plug("root")
        ip("addr", "add", f"{self.root_address}/{self.prefixlen}", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        for host in self.hosts.values():
            ip("netns", "add", host.netns)
            # Made straight inside the two namespaces: nothing appears in the root one.
            ip("link", "add", "name", host.bridge_link, "netns", self.bridge_ns, "type", "veth",
               "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
            self._plug(host.bridge_link)
            self._in(host.netns, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", "eth0")
            self._in(host.netns, "link", "set", "eth0", "up")
            # Kernels talk to their worker over 127.0.0.1; a namespace starts with lo down.
            self._in(host.netns, "link", "set", "lo", "up")

    def _in(self, netns: str, *args: str) -> None:
        ip("-n", netns, *args)

    def _plug(self, link: str) -> None:
        self._in(self.bridge_ns, "link", "set", link, "master", "br0")
        self._in(self.bridge_ns, "link", "set", link, "up")

    # --- links ---------------------------------------------------------------------

    def cut(self, name: str) -> None:
        """Pull the host's cable: packets to and from it are dropped, connections hang."""
        self._in(self.bridge_ns, "link", "set", self.hosts[name].bridge_link, "down")

    def restore(self, name: str) -> None:
        self._in(self.bridge_ns, "link", "set", self.hosts[name].bridge_link, "up")

    # --- processes -----------------------------------------------------------------

    def command(self, name: str, args: Sequence[str]) -> list[str]:
        """``args`` as run inside host ``name``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[name].netns, *args]

    def start(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in host ``name``, in a session of its own, output to ``log``;
        stopped by :meth:`stop` or :meth:`close`."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(name, args),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        self.processes.append(process)
        return process

    def run(
        self, name: str, args: Sequence[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(name, args), capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self, process: subprocess.Popen[bytes], grace: float = 10) -> None:
        """SIGTERM to the process's group, SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # What the group left behind (a kernel outliving its worker) goes too: a namespace
        # with a process in it outlives its deletion.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        for process in reversed(self.processes):
            self.stop(process, grace=5)
        for host in self.hosts.values():
            self._kill_left(host.netns)
            ip("netns", "delete", host.netns, check=False)
        ip("netns", "delete", self.bridge_ns, check=False)
        ip("link", "delete", self.root_link, check=False)  # gone with its peer, normally

    def _kill_left(self, netns: str) -> None:
        """Kill whatever still runs in ``netns`` (started there by a process of ours)."""
        pids = ip("netns", "pids", netns, check=False).stdout.split()
        for pid in pids:
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


@contextmanager
def network(hosts: Sequence[str]) -> Iterator[Network]:
    """A :class:`Network` of ``hosts``, removed at the end; skips the test where this
    machine does not allow namespaces (not root, no CAP_NET_ADMIN), or fails it where
    LABRUN_REQUIRE_NETNS is set (CI, which runs as root)."""
    why = namespaces_unavailable()
    if why is not None:
        if os.environ.get("LABRUN_REQUIRE_NETNS"):
            pytest.fail(f"{why}; LABRUN_REQUIRE_NETNS is set")
        pytest.skip(why)
    net = Network(hosts)
    try:
        net.create()
        yield net
    finally:
        net.close()
