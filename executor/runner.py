"""The notebook runner: one notebook job, executed by papermill on a Dask worker.

The dispatcher submits :func:`run_notebook_job` with a job spec. On the worker it claims the
run (the server grants each dispatched attempt once, so a job never runs twice at once),
recording the machine, its packages and the GPUs it holds; a re-run compares those packages
with its original's record first. It takes a warm kernel and the run's GPUs, runs papermill
with the parameters while cell progress and output stream to the run's log, uploads the
executed notebook and its HTML, and reports how it ended. A worker cut off from the server
abandons its jobs (:mod:`.fencing`): their kernels are killed, and nothing more is reported.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from papermill.exceptions import PapermillExecutionError

from labrun import delivery, settings
from labrun.delivery import AppendLogsOp, ArtifactOp, CreateReportOp, Outbox, UpdateRunOp
from labrun.errors import Conflict, NotFound
from labrun.messages import JobSpec, RunError
from labrun.models import ClaimRun, CreateReport, LogEntryIn, RunStatus, UpdateRun

from .engine import ENGINE_NAME
from .kernels import FLUSH_CODE, KernelPool, KernelUnavailable, setup_code
from .plugins import Devices, Html, Kernels, ServerLink
from .reruns import check_rerun

logger = logging.getLogger("labrun.executor")

# Tries at a job whose kernel dies before its first cell: a broken kernel, not the job.
KERNEL_TRIES = 3
# Seconds a job's task waits for its last records to reach the server before it ends.
RECORD_TIMEOUT = 60.0


class RunLog:
    """Text for a run's log, handed to the worker's outbox in small batches.

    Behaves as the file objects papermill writes a notebook's stdout and stderr to. The
    outbox delivers in order and keeps what the server cannot take yet.
    """

    def __init__(
        self, outbox: Outbox, run_id: int, interval: float = 0.25, *, attempt: int | None = None
    ) -> None:
        self.outbox = outbox
        self.run_id = run_id
        self.attempt = attempt  # the attempt these lines belong to, not whatever runs later
        self.interval = interval
        self._pending: list[LogEntryIn] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"labrun-log-{run_id}")
        self._thread.start()
        self.stdout = _Stream(self, "stdout")
        self.stderr = _Stream(self, "stderr")

    def write(self, stream: Literal["stdout", "stderr", "system"], text: str) -> None:
        if text:
            with self._lock:
                self._pending.append(LogEntryIn(stream=stream, text=text))

    def system(self, text: str) -> None:
        self.write("system", text.rstrip("\n") + "\n")

    def _send(self) -> None:
        with self._lock:
            entries, self._pending = self._pending, []
        if entries:
            self.outbox.put(AppendLogsOp(run_id=self.run_id, entries=entries, attempt=self.attempt))

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._send()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(30)
        self._send()


class _Stream:
    def __init__(self, log: RunLog, name: Literal["stdout", "stderr"]) -> None:
        self.log = log
        self.name = name

    def write(self, text: str) -> int:
        self.log.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass


class NotebookJob:
    """One attempt at one notebook job on this worker."""

    def __init__(
        self,
        spec: JobSpec,
        devices: list[int],
        kernel: AsyncKernelManager,
        *,
        link: ServerLink,
        kernels: Kernels,
        html: Html,
        packages: list[str] | None = None,
    ):
        self.link = link
        self.kernels = kernels
        self.html = html
        self.spec = spec
        self.run_id = spec.run_id
        self.devices = devices
        self.kernel: AsyncKernelManager | None = kernel
        # The packages the claim recorded: what a re-run compares with its original's.
        self.packages = packages
        self.cancelled: str | None = None
        # Why this attempt was given up (its worker fenced itself): it reports nothing more.
        self.abandoned: str | None = None
        self.cells_started = 0
        self.outbox = Outbox.of(link.client)
        self.log = RunLog(self.outbox, self.run_id, attempt=spec.attempt)
        # Seconds each phase took, for the benchmarks and the worker's debug log.
        self.timings: dict[str, float] = {}
        self._mark = time.perf_counter()

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._mark, 4)
        self._mark = now

    @property
    def pool(self) -> KernelPool:
        return self.kernels.pool

    def cancel(self, reason: str) -> None:
        """Stop the job: interrupt its kernel, then kill it if it does not stop."""
        self.cancelled = reason
        kernel = self.kernel
        if kernel is None:
            return
        try:
            self.pool.interrupt(kernel)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self.kernel is kernel:
                time.sleep(0.05)
            if self.kernel is kernel:
                self.pool.kill(kernel)
        except Exception as err:  # noqa: BLE001 - best effort; the kernel may be gone
            logger.warning("labrun: could not stop the kernel of run %d: %s", self.run_id, err)

    def abandon(self, reason: str) -> None:
        """Give this attempt up: its worker cannot reach the server, which is about to run
        the job again elsewhere. Its kernel (and what it started) is killed at once, with no
        interrupt first: a notebook may catch that and carry on, and no one would hear how
        it ended. Whatever the attempt would still report is dropped here."""
        self.abandoned = reason
        delivery.abandon(self.run_id, self.spec.attempt)
        kernel = self.kernel
        if kernel is None:
            return
        try:
            self.pool.kill(kernel)
        except Exception as err:  # noqa: BLE001 - the kernel may be gone already
            logger.warning("labrun: could not kill the kernel of run %d: %s", self.run_id, err)

    @property
    def attempt(self) -> int:
        return self.spec.attempt

    @property
    def stopped(self) -> str | None:
        """Why the job stops before its end (cancelled, or abandoned), if it does."""
        return self.cancelled or self.abandoned

    def _environ(self) -> dict[str, str]:
        environ = {
            settings.RUN_ID: str(self.run_id),
            settings.PROJECT: self.spec.project or "default",
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, self.devices)),
            # The server the worker reports to now: the scheduler of record may have moved
            # since the kernel was started.
            settings.SERVER_URL: self.link.client.url,
        }
        if self.spec.token:
            # The job's own token, scoped to its run and acting as its owner: what
            # labrun.log and %%mlrun in the notebook use. The pool's stays with the worker.
            environ[settings.TOKEN] = self.spec.token
        return environ

    def _cwd(self) -> str | None:
        # The submitter's folder when this worker shares its file system, so the notebook
        # finds files beside it; otherwise the kernel stays in its scratch folder.
        cwd = self.spec.cwd
        return cwd if cwd and Path(cwd).is_dir() else None

    def _on_cell_start(self, cell: Any, cell_index: int) -> None:
        self.cells_started += 1
        if cell.cell_type == "code":
            first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
            self.log.system(f"[cell {cell_index}] {first}")

    def _execute(self, out_path: Path) -> Any:
        assert self.spec.content is not None, "a notebook job's spec has its notebook"
        nb = nbformat.from_dict(self.spec.content)
        nb.metadata.setdefault("kernelspec", {"name": "python3", "language": "python"})
        return papermill.execute_notebook(
            nb,
            str(out_path),
            parameters=self.spec.parameters,
            kernel_name=self.pool.kernel_name,
            progress_bar=False,
            request_save_on_cell_execute=False,
            stdout_file=self.log.stdout,
            stderr_file=self.log.stderr,
            execution_timeout=self.spec.timeout,
            engine_name=ENGINE_NAME,
            km=self.kernel,
            on_cell_start=self._on_cell_start,
        )

    def _flush_kernel(self) -> None:
        assert self.kernel is not None
        try:
            self.pool.run_code(self.kernel, FLUSH_CODE, timeout=60)
        except Exception as err:  # noqa: BLE001 - the run's own outcome stands
            self.log.system(f"could not flush labrun's records in the kernel: {err}")
        self._phase("flush")

    def run(self) -> dict[str, Any]:
        workdir = Path(tempfile.mkdtemp(prefix=f"run-{self.run_id}-", dir=self.kernels.scratch))
        out_path = workdir / "executed.ipynb"
        lines, error = check_rerun(self.link.client, self.spec, self.packages)
        for line in lines:
            self.log.system(line)
        if error is None:
            status, error = self._attempts(out_path)
        else:
            status = RunStatus.failed
            if self.kernel is not None:
                # Nothing ran in it: another job can have it (unless it was killed).
                kernel, self.kernel = self.kernel, None
                if self.abandoned:
                    self.pool.discard(kernel)
                else:
                    self.pool.give_back(kernel)
        if self.abandoned:
            return self._abandoned()
        if self.cancelled:
            status, error = RunStatus.cancelled, None
            self.log.system(f"cancelled: {self.cancelled}")
        elif error:
            self.log.system(f"failed: {error.message}")
        self._upload(out_path, report=status == RunStatus.completed and not error)
        self._phase("upload")
        self.log.close()
        self._phase("log")
        self._report(status, error)
        self._phase("report")
        logger.debug("labrun: run %d took %s", self.run_id, self.timings)
        return {
            "run_id": self.run_id,
            "status": status.value,
            "error": error.record() if error is not None else None,
            "timings": self.timings,
        }

    def _abandoned(self) -> dict[str, Any]:
        logger.warning(
            "labrun: run %d (attempt %d) abandoned: %s",
            self.run_id,
            self.spec.attempt,
            self.abandoned,
        )
        self.log.close()  # what it holds goes nowhere: the outbox drops this attempt's records
        return {"run_id": self.run_id, "status": "abandoned", "error": None}

    def _attempts(self, out_path: Path) -> tuple[RunStatus, RunError | None]:
        """papermill on a kernel, another kernel if one dies before the first cell."""
        status, error = RunStatus.failed, None
        try:
            for attempt in range(1, KERNEL_TRIES + 1):
                if self.kernel is None:
                    self.kernel = self.pool.acquire()
                self._phase("acquire")
                if self.stopped:
                    break
                self.pool.run_code(self.kernel, setup_code(self._environ(), self._cwd()))
                self._phase("setup")
                try:
                    self._execute(out_path)
                    status = RunStatus.completed
                    self._phase("execute")
                except PapermillExecutionError as err:
                    status = RunStatus.failed
                    error = RunError.raised(
                        err.ename,
                        err.evalue,
                        err.traceback,
                        cell_index=err.cell_index,
                        exec_count=err.exec_count,
                    )
                except (DeadKernelError, RuntimeError) as err:
                    if not self.stopped and self.cells_started == 0 and attempt < KERNEL_TRIES:
                        # Died before the first cell: the kernel's fault, not the job's.
                        self.log.system(f"the kernel died before the first cell ({err}); retrying")
                        self.pool.discard(self.kernel)
                        self.kernel = None
                        continue
                    status = RunStatus.failed
                    error = RunError(type=type(err).__name__, message=f"the kernel died: {err}")
                if error is None or error.cell_index is not None:
                    # The kernel lives (it ran to the end, or a cell raised): what labrun
                    # recorded in it goes out before it is shut down.
                    self._flush_kernel()
                break
        except KernelUnavailable as err:
            error = RunError.of(err)
        except Exception as err:  # noqa: BLE001 - whatever broke, the run must say so
            error = RunError.of(err, with_traceback=True)
        finally:
            if self.kernel is not None:
                kernel, self.kernel = self.kernel, None
                self.pool.discard(kernel)
        return status, error

    def _upload(self, out_path: Path, *, report: bool = False) -> None:
        if not out_path.exists():
            return
        stem = Path(self.spec.notebook or "notebook.ipynb").stem
        try:
            text = out_path.read_text()
            self._artifact(f"{stem}.ipynb", text, "application/x-ipynb+json", "notebook")
            executed = nbformat.reads(text, as_version=4)
            html = self.html.render(executed)
            self._phase("render_html")
            self._artifact(f"{stem}.html", html, "text/html", "html")
            if report and self.spec.report:
                self._record_report(nb=executed, notebook=f"{stem}.ipynb")
        except ValueError as err:
            self.log.system(f"could not read the executed notebook: {err}")

    def _artifact(self, name: str, text: str, content_type: str, kind: str) -> None:
        op = ArtifactOp(
            run_id=self.run_id,
            name=name,
            data=text.encode(),
            content_type=content_type,
            artifact_kind=kind,
            # Refused if this attempt was lost meanwhile: the next one's files stand.
            attempt=self.spec.attempt,
        )
        self.outbox.put(op)

    def _record_report(self, nb: Any, notebook: str) -> None:
        """A report job: its HTML for readers (no code unless asked), recorded as a report."""
        options = self.spec.report or {}
        html = self.html.render(nb, code=bool(options.get("code")))
        self._artifact("report.html", html, "text/html", "report")
        report = CreateReport(
            name=options.get("name") or Path(notebook).stem,
            notebook=self.spec.notebook or notebook,
            params=self.spec.parameters,
            run_id=self.run_id,
            html_artifact="report.html",
            notebook_artifact=notebook,
        )
        self.outbox.put(CreateReportOp(body=report))
        self.log.system(f"recorded the report {options.get('name') or notebook!r}")

    def _report(self, status: RunStatus, error: RunError | None) -> None:
        if status != RunStatus.cancelled:  # else the server cancelled it: nothing to add
            # A conflict (cancelled or declared lost meanwhile) leaves the server's word.
            update = UpdateRun(
                status=status,
                error=error.record() if error is not None else None,
                attempt=self.spec.attempt,
            )
            self.outbox.put(UpdateRunOp(run_id=self.run_id, body=update))
        # The task ends once the run's record is on the server (or, with the server away,
        # waits in this worker's spool, which sends it once the server is back).
        if not self.outbox.flush(RECORD_TIMEOUT):
            logger.warning(
                "labrun: run %d's last records wait in %s for the server",
                self.run_id,
                self.outbox.spool.path,
            )


def run_notebook_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of a notebook job: claim, run, report. Returns how it ended.

    ``spec`` is a :class:`~labrun.messages.JobSpec` as JSON (a worker of another labrun
    version fails here, clearly).
    """
    job_spec = JobSpec.model_validate(spec)
    link, devices, kernels = ServerLink.of(), Devices.of(), Kernels.of()
    run_id = job_spec.run_id
    held = devices.allocate(run_id, job_spec.gpus)
    try:
        # The kernel first: the run counts as running (and its GPUs as used) from the
        # moment it can run, not while it waits for a kernel.
        kernel = kernels.pool.acquire()
        machine = devices.job_environment(held)
        try:
            link.claim(
                run_id,
                ClaimRun(
                    attempt=job_spec.attempt, worker=link.id, devices=held, environment=machine
                ),
            )
        except (Conflict, NotFound) as err:
            # Another attempt owns the run (this task was re-run after its worker died),
            # or it was cancelled meanwhile: do nothing, and keep the unused kernel.
            kernels.pool.give_back(kernel)
            return {"run_id": run_id, "status": "superseded", "error": RunError.of(err).record()}
        job = NotebookJob(
            job_spec,
            held,
            kernel,
            link=link,
            kernels=kernels,
            html=Html.of(),
            packages=machine["packages"],
        )
        kernels.jobs[run_id] = job
        try:
            return job.run()
        finally:
            kernels.jobs.pop(run_id, None)
    finally:
        devices.release(run_id)
