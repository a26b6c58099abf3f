"""``--wait``: show runs' progress until they end, woken by the server's event stream.

The server announces every change of a run on its WebSocket event stream
(``/labrun/api/v1/events``, which the sidebar uses too). Following it, the CLI reads a run
again the moment it changed, instead of up to a polling interval later. Where the stream
cannot be reached (a proxy without WebSocket support, say), or drops, it polls instead.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from labrun.client import Client
from labrun.models import RunStatus, RunSummary
from labrun.settings import API_PREFIX

from .output import console, duration, status

# The events that say a run changed, and where they name it.
RUN_EVENTS = {"run.updated": "id", "run.log": "run_id"}
# Seconds to wait for the stream's greeting before polling instead.
CONNECT_TIMEOUT = 5.0


class RunEvents:
    """The server's event stream, narrowed to some runs.

    A thread reads the stream; :meth:`changes` waits until one of the runs changed and
    says which. If the stream drops, :attr:`connected` turns false and :attr:`problem`
    says why.
    """

    def __init__(self, client: Client, run_ids: Iterable[int]) -> None:
        self.client = client
        self.run_ids = frozenset(run_ids)
        self.connected = False
        self.problem: str | None = None
        self._socket: Any = None
        self._closing = False
        self._lock = threading.Lock()
        self._changed: set[int] = set()
        self._wake = threading.Event()

    @property
    def url(self) -> str:
        base = self.client.url
        scheme = "wss" if base.startswith("https:") else "ws"
        return f"{scheme}:{base.split(':', 1)[1].rstrip('/')}{API_PREFIX}/events"

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Subscribe; True once the server greeted us, so no later change goes unseen."""
        import websocket  # websocket-client: only `--wait` needs it

        headers = [f"Authorization: token {self.client.token}"] if self.client.token else []
        try:
            # No Origin header: Jupyter Server refuses a cross-origin one, which a proxy
            # in front of it would make this look like.
            socket = websocket.create_connection(
                self.url, timeout=timeout, header=headers, suppress_origin=True
            )
        except (websocket.WebSocketException, OSError) as err:
            self.problem = _describe(err)
            return False
        try:
            # The server subscribes this connection before it says hello.
            greeting = json.loads(socket.recv())
            if not isinstance(greeting, dict) or greeting.get("type") != "hello":
                raise ValueError(f"it began with {str(greeting)[:80]!r}, not a hello")
        except (websocket.WebSocketException, OSError, ValueError) as err:
            socket.close()
            self.problem = _describe(err)
            return False
        socket.settimeout(None)
        self._socket = socket
        self.connected = True
        threading.Thread(target=self._read, name="labrun-events", daemon=True).start()
        return True

    def _read(self) -> None:
        import websocket

        try:
            while True:
                message = self._socket.recv()
                if not message:  # the server closed the stream
                    raise websocket.WebSocketConnectionClosedException("the server closed it")
                changed = self._runs_in(message)
                if changed:
                    with self._lock:
                        self._changed |= changed
                    self._wake.set()
        except (websocket.WebSocketException, OSError, ValueError) as err:
            if not self._closing:
                self.problem = _describe(err)
        self.connected = False
        self._wake.set()  # the follower polls from now on

    def _runs_in(self, message: str | bytes) -> set[int]:
        event = json.loads(message)
        kind = event.get("type")
        if kind == "overflow":  # the server dropped events meant for us: read them all
            return set(self.run_ids)
        field = RUN_EVENTS.get(kind)
        if field is None:
            return set()
        run_id = (event.get("data") or {}).get(field)
        return {run_id} if run_id in self.run_ids else set()

    def changes(self, timeout: float) -> set[int]:
        """The runs that changed since the last call; waits up to ``timeout`` seconds for
        one. Empty when none did (or the stream dropped meanwhile)."""
        self._wake.wait(timeout)
        # Cleared before the caller reads the runs: a change after this wakes the next call.
        self._wake.clear()
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def close(self) -> None:
        self._closing = True
        if self._socket is not None:
            # Not close(): it waits for the server's close frame, which the reading thread
            # may take first. abort() wakes that thread at once.
            with contextlib.suppress(Exception):
                self._socket.send_close()
            self._socket.abort()


def _describe(err: Exception) -> str:
    return str(err).strip() or type(err).__name__


def _progress_table(runs: list[RunSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "status", "worker", "duration"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        table.add_row(
            str(run.id),
            run.name or "",
            status(run.status.value),
            run.worker or "",
            duration(run.duration),
        )
    return table


def follow(
    client: Client,
    run_ids: list[int],
    *,
    sweep_id: int | None = None,
    stream_log: bool = False,
    output_dir: str | None = None,
    interval: float = 0.5,
    resync: float = 10.0,
) -> int:
    """Show progress until every run ended; 0 when all completed, else 1.

    Runs are read again when the event stream says they changed, and every ``resync``
    seconds in case an event went astray (another server sharing the store changed them);
    without the stream, every ``interval`` seconds.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("runs", total=len(run_ids), counts="")
    events = RunEvents(client, [*run_ids, *([sweep_id] if sweep_id is not None else [])])
    if not events.connect():
        console.print(
            f"[dim]No event stream from the server ({events.problem}); "
            f"checking every {interval:g} s.[/]"
        )
    # Between two reads after events: a run printing many lines wakes us once a batch.
    gap = 0.05 if len(run_ids) == 1 else 0.25
    offset = 0
    latest: dict[int, RunSummary] = {}
    stale = set(run_ids)
    try:
        with Live(progress, console=console, refresh_per_second=4, transient=False) as live:
            while True:
                read_at = time.monotonic()
                if sweep_id is not None:
                    latest = {run.id: run for run in client.sweep(sweep_id).runs}
                else:
                    for run_id in stale:
                        latest[run_id] = client.get_run(run_id)
                if stream_log and len(run_ids) == 1:
                    tail = client.logs(run_ids[0], offset=offset)
                    offset = tail.next_offset
                    for entry in tail.entries:
                        style = {"stderr": "red", "system": "dim"}.get(entry.stream, "")
                        live.console.print(Text(entry.text.rstrip("\n"), style=style))
                runs = list(latest.values())
                counts: dict[str, int] = {}
                for run in runs:
                    counts[run.status.value] = counts.get(run.status.value, 0) + 1
                done = sum(1 for run in runs if run.status.finished)
                summary = " ".join(status(k) + f" {v}" for k, v in sorted(counts.items()))
                progress.update(task, completed=done, counts=summary)
                if done == len(runs):
                    break
                stale = _wait(events, run_ids, interval, resync, live)
                time.sleep(max(0.0, read_at + gap - time.monotonic()))
    finally:
        events.close()
    console.print()
    if len(runs) > 1:
        console.print(_progress_table(runs))
    failed = [run for run in runs if run.status != RunStatus.completed]
    for run in runs:
        notebook = _executed_notebook(client, run.id, output_dir)
        if notebook:
            console.print(f"run {run.id} {status(run.status.value)}: {notebook}", soft_wrap=True)
    for run in failed:
        detail = client.get_run(run.id)
        if detail.error:
            console.print(f"[red]run {run.id}: {detail.error.get('message', '')}[/]")
    return 1 if failed else 0


def _wait(
    events: RunEvents, run_ids: list[int], interval: float, resync: float, live: Live
) -> set[int]:
    """Until some runs may have changed; which ones to read again."""
    if events.connected:
        changed = events.changes(resync)
        if events.connected:
            return changed or set(run_ids)
        live.console.print(
            f"[dim]The event stream dropped ({events.problem}); checking every {interval:g} s.[/]"
        )
        return set(run_ids)
    time.sleep(interval)
    return set(run_ids)


def _executed_notebook(client: Client, run_id: int, output_dir: str | None) -> str | None:
    """Where a run's executed notebook is: saved into ``output_dir``, or its URL."""
    for artifact in client.artifacts(run_id).artifacts:
        if artifact.kind != "notebook":
            continue
        if output_dir is None:
            return f"{client.url}{API_PREFIX.lstrip('/')}/runs/{run_id}/artifacts/{artifact.name}"
        target = Path(output_dir) / f"{run_id}-{artifact.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.download_artifact(run_id, artifact.name))
        return str(target)
    return None
