"""Notebook views: a live widget for a ``--no-wait`` run, and the ``%mlruns`` table."""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from labrun.errors import LabrunError
from labrun.models import RunSummary

if TYPE_CHECKING:
    from .cell_run import CellRun

LOG_TAIL_LINES = 12
METRICS_INTERVAL = 2.0

_STATUS_COLOURS = {
    "queued": "#8a8a8a",
    "running": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#ff7f0e",
    "lost": "#9467bd",
}


def _badge(status: str) -> str:
    colour = _STATUS_COLOURS.get(status, "#8a8a8a")
    return (
        f'<span style="background:{colour};color:white;border-radius:3px;padding:0 4px">'
        f"{html.escape(status)}</span>"
    )


class RunWidget(widgets.VBox):
    """Status, log tail and latest metrics of a cell run, updated as its events arrive."""

    def __init__(self, run: CellRun) -> None:
        self.run = run
        self.header = widgets.HTML()
        self.log_view = widgets.HTML()
        self.metrics = widgets.HTML()
        self._lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._partial = ""
        super().__init__([self.header, self.metrics, self.log_view])
        self.refresh()
        run.observe(self._on_event)
        threading.Thread(target=self._poll_metrics, daemon=True).start()

    def refresh(self) -> None:
        run = self.run
        where = f" on {html.escape(run.worker)}" if run.worker else ""
        ident = f"run {run._run_id}" if run._run_id is not None else html.escape(run.label)
        hint = (
            " &middot; <code>.result()</code> or <code>%mlrun_fetch</code> brings its values in"
            if run.status in {"completed"} and not run.values
            else ""
        )
        self.header.value = f"<b>labrun</b> {ident} {_badge(run.status)}{where}{hint}"
        text = "".join(self._lines) + self._partial
        self.log_view.value = (
            f'<pre style="margin:0;max-height:14em;overflow:auto">{html.escape(text)}</pre>'
            if text
            else ""
        )

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["kind"] == "stream":
            text = self._partial + event.get("text", "")
            *complete, self._partial = text.split("\n")
            for line in complete:
                # A progress bar rewrites its line with \r: keep what it shows last.
                self._lines.append(line.rsplit("\r", 1)[-1] + "\n")
            self._partial = self._partial.rsplit("\r", 1)[-1]
        self.refresh()

    def _poll_metrics(self) -> None:
        run = self.run
        while True:
            finished = run.done()
            if run._run_id is not None:
                try:
                    summary = run.pool.client.get_run(run._run_id)
                except LabrunError:
                    summary = None
                if summary is not None and summary.metrics:
                    self.metrics.value = metrics_line(summary.metrics)
            if finished:
                self.refresh()
                return
            time.sleep(METRICS_INTERVAL)


def metrics_line(metrics: dict[str, float | None]) -> str:
    parts = [
        f"{html.escape(k)} <b>{v:.4g}</b>" if v is not None else f"{html.escape(k)} -"
        for k, v in sorted(metrics.items())
    ]
    return " &middot; ".join(parts)


def run_widget(run: CellRun) -> RunWidget:
    return RunWidget(run)


def runs_table(runs: list[RunSummary], base_url: str | None = None) -> str:
    """HTML for ``%mlruns``: recent runs with status, duration and latest metrics."""
    if not runs:
        return "<i>no runs yet</i>"
    rows = []
    for run in runs:
        duration = f"{run.duration:.1f} s" if run.duration is not None else ""
        rows.append(
            "<tr>"
            f"<td>{run.id}</td>"
            f"<td>{html.escape(run.name or '')}</td>"
            f"<td>{html.escape(run.kind.value)}</td>"
            f"<td>{_badge(run.status.value)}</td>"
            f"<td>{html.escape(run.user)}</td>"
            f"<td>{html.escape(run.started_at.strftime('%Y-%m-%d %H:%M:%S') if run.started_at else '')}</td>"
            f"<td>{duration}</td>"
            f"<td>{metrics_line(run.metrics)}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("run", "name", "kind", "status", "user", "started", "duration", "latest metrics")
    )
    return (
        '<table class="labrun-runs"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
