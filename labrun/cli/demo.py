"""``labrun demo``: the main job on a fresh machine.

Starts the embedded server (SQLite in the Jupyter data dir, so a later ``jupyter lab``
shows the same runs), trains a small model three times with different learning rates,
tracked with the public API, and prints what it recorded.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import labrun
from labrun.client import Client, discover
from labrun.errors import ServerUnavailable
from labrun.settings import data_dir

from .output import console
from .runs import print_runs_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def embedded_server() -> Iterator[Client]:
    """A running labrun server: one already running, or a new one for the demo's length."""
    try:
        url, token = discover()
        with Client(url, token) as client:
            yield client
        return
    except ServerUnavailable:
        pass
    port, token = _free_port(), secrets.token_hex(16)
    log_path = data_dir() / "demo-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "labrun.cli", "server", "--port", str(port), "--token", token],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise click.ClickException(f"the labrun server did not start; see {log_path}")
            try:
                if httpx.get(
                    f"{url}labrun/api/v1/version",
                    headers={"Authorization": f"token {token}"},
                    timeout=1,
                ).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the labrun server did not answer in 60 s; see {log_path}"
                )
            time.sleep(0.2)
        with Client(url, token) as client:
            yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def train(run: labrun.Run, lr: float, epochs: int, seed: int) -> float:
    """Fit y = 3x - 1 + noise with SGD: a stand-in for a real training loop."""
    rng = random.Random(seed)
    data = [(x, 3 * x - 1 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))]
    w = b = 0.0
    step = 0
    loss = float("nan")
    for _ in range(epochs):
        rng.shuffle(data)
        for x, y in data:
            error = w * x + b - y
            w -= lr * error * x
            b -= lr * error
            loss = error * error
            run.log({"loss": loss, "w": w, "b": b}, step=step)
            step += 1
    return loss


@click.command()
@click.option("--project", default="demo", show_default=True, help="Project to record the runs in.")
def demo(project: str) -> None:
    """Run the demo: start a server, track three training runs, show them."""
    learning_rates = [0.3, 0.1, 0.03]
    epochs, seed = 20, 0
    with embedded_server() as client:
        console.print(f"labrun server at [bold]{client.url}[/] (store in {data_dir()})")
        ids = []
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("training", total=len(learning_rates))
            for lr in learning_rates:
                progress.update(task, description=f"training lr={lr}")
                run = labrun.init(
                    project=project,
                    name=f"sgd lr={lr}",
                    params={"lr": lr, "epochs": epochs, "seed": seed},
                    client=client,
                )
                train(run, lr, epochs, seed)
                run.finish()
                ids.append(run.id)
                progress.advance(task)
        listing = client.list_runs(project=project, sort="metrics.loss", limit=len(ids))
        print_runs_table(listing, show_project=False)
        best = listing.runs[0]
        console.print(
            f"\nBest run: [bold]{best.id}[/] ({best.name}), final loss {best.metrics.get('loss'):.4g}"
        )
        recorded = sum(len(series.steps) for i in ids for series in client.metrics(i).series)
        console.print(f"Metric points recorded: {recorded:,}")
        console.print(
            "Open them: `labrun show RUN` and `labrun compare "
            + " ".join(map(str, ids))
            + "`, or `jupyter lab` (the same store)."
        )
