"""The labrun magics: ``%%mlrun``, ``%mlparams``, ``%mldataset``, ``%mlruns`` and friends."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display
from traitlets import Float, Int, Unicode

from labrun import environment, settings, tracking
from labrun.client import Client
from labrun.datahash import human_size
from labrun.errors import Conflict, InvalidRequest, LabrunError, NotFound
from labrun.messages import CellPayload
from labrun.models import LinkDataset, RunStatus
from labrun.params import parse_assignments, parse_line

from .analysis import cell_names, name_list
from .cell_run import (
    CellRun,
    interruptible,
    local_cuda,
    ship_inputs,
    show_event,
    stored_values,
    stream_flush,
)
from .pool import Pool, QueuePriorities
from .recording import record_cell, record_dataset
from .sessions import SessionHandle, Sessions

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SESSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# What a session never returned (so a notebook's value is always sent).
_MISSING = object()


class MagicError(Exception):
    """A clear message for the user, shown without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"labrun: {self}"]


@magics_class
class LabrunMagics(Magics):
    """Run cells on the labrun pool and record what they used."""

    project = Unicode(
        "",
        help="Project for runs made from this kernel (default: $LABRUN_PROJECT or 'default').",
    ).tag(config=True)
    session_idle_timeout = Float(
        1800.0, help="Seconds a --session may sit idle before its worker releases it and its GPUs."
    ).tag(config=True)
    max_input_artifact = Int(
        64 * 2**20,
        help="Inputs of a cell larger than this (bytes, pickled) are recorded by digest only.",
    ).tag(config=True)

    def __init__(self, shell: Any, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._pool: Pool | None = None
        self._client: Client | None = None
        self.params: dict[str, Any] = {}
        self.datasets: dict[str, str] = {}
        self.runs: list[CellRun] = []
        self.sessions = Sessions()
        self._queues = QueuePriorities(lambda: self.client)
        self._capturer = environment.Capturer()
        shell.events.register("post_run_cell", self._follow_params)

    # --- connections --------------------------------------------------------------------

    @property
    def ip(self) -> InteractiveShell:
        assert self.shell is not None
        return self.shell

    @property
    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = Client()
            except LabrunError as err:
                raise MagicError(str(err)) from None
        return self._client

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            try:
                self._pool = Pool(self.client)
            except LabrunError as err:
                raise MagicError(str(err)) from None
        return self._pool

    def _project(self, given: str | None) -> str:
        return given or self.project or os.environ.get(settings.PROJECT) or "default"

    def _current_run(self) -> tracking.Run | None:
        try:
            return tracking.current_run()
        except LabrunError:
            return None

    # --- %%mlrun ---------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs for the cell (default: 1 where the pool has GPUs, else 0)",
    )
    @argument("--queue", default=None, help="queue whose priority the cell takes")
    @argument("--name", default=None, help="a name for the run")
    @argument("--project", default=None, help="project of the run")
    @argument(
        "--out",
        default=None,
        help="comma-separated names to bring back (default: every name the cell assigns)",
    )
    @argument(
        "--no-wait", action="store_true", help="return at once with a live widget and a handle"
    )
    @argument(
        "--timeout", type=float, default=None, help="seconds to wait before cancelling the cell"
    )
    @argument(
        "--session",
        default=None,
        help="keep the remote namespace (and GPUs) between cells of this session",
    )
    @cell_magic
    def mlrun(self, line: str, cell: str) -> Any:
        """Run this cell on the labrun pool, stream its output, bring its values back."""
        args = parse_argstring(self.mlrun, line)
        if args.gpus is not None and not 0 <= args.gpus <= 64:
            raise UsageError(f"--gpus {args.gpus}: give a number of GPUs from 0 to 64")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError(f"--timeout {args.timeout}: give a number of seconds above 0")
        if args.session is not None and not SESSION_NAME.match(args.session):
            raise UsageError(
                f"--session {args.session!r}: use letters, digits, '_', '.' or '-' (up to 64)"
            )
        out = None if args.out is None else name_list(args.out)
        if out is not None and not out:
            raise UsageError(
                f"--out {args.out!r}: give Python names separated by commas, like --out model,losses"
            )
        try:
            priority = self._queues.priority(args.queue) if args.queue else 0
        except LabrunError as err:
            raise UsageError(str(err)) from None
        source = self.ip.transform_cell(cell)
        try:
            names = cell_names(source)
        except SyntaxError:
            # Let IPython show the error where the user wrote it.
            self.ip.showsyntaxerror()
            return None
        pool = self.pool
        gpus = pool.gpus_for(args.gpus)
        ns = self.ip.user_ns
        hidden = self.ip.user_ns_hidden
        values = {n: ns[n] for n in names.reads if n in ns and n not in hidden}
        session = None
        if args.session:
            session = self._session(args.session, gpus, priority, args.project, args.queue)
            # The session's own values are the truth: send only what the notebook changed.
            values = {n: v for n, v in values.items() if session.returned.get(n, _MISSING) is not v}
        try:
            packed = ship_inputs(values)
        except LabrunError as err:
            raise MagicError(str(err)) from None
        key = uuid.uuid4().hex
        label = f"cell {args.name}" if args.name else "the cell"
        run = CellRun(pool, key=key, label=label, namespace=ns, session=session)
        returns = out if out is not None else names.assigns
        payload = CellPayload(
            token=key,
            key=key,
            topic=pool.topic,
            source=cell,
            returns=returns,
            explicit=out is not None,
            cuda=local_cuda(),
            gpus=gpus,
        )
        # The records of earlier cells wait while this one is in flight, its grant
        # included (on the server they would compete with it), unless it turns out long.
        with pool.bookkeeper.busy():
            if gpus and session is None:
                # The scheduler of record admits GPU cells as it does jobs (a session, once).
                try:
                    pool.grants.acquire(key, gpus, kind="cell", queue=args.queue, what=label)
                except LabrunError as err:
                    raise MagicError(str(err)) from None
                run.granted = True
            if args.no_wait:
                self._start(run, payload, packed, args, priority)
                run.follow_in_background(lambda event: None)
                return run
            self._start(run, payload, packed, args, priority)
            with interruptible(run):
                try:
                    outcome = run.pump(show_event, args.timeout)
                except TimeoutError:
                    run.cancel()
                    raise MagicError(
                        f"{run.label} did not finish within --timeout {args.timeout:g} s "
                        "and was cancelled"
                    ) from None
            stream_flush()
            run.settle(outcome)
        return None

    def _start(
        self, run: CellRun, payload: CellPayload, packed: dict[str, Any], args: Any, priority: int
    ) -> None:
        """Record the cell's run (off the cell's path), send the cell, keep its handle."""
        fields = {
            "project": self._project(args.project),
            "name": args.name,
            "params": dict(self.params),
            "queue": args.queue,
            "requested_gpus": payload.gpus,
            "source": payload.source,
            "parent_id": run.session.run_id if run.session else None,
        }
        record_cell(
            run.pool.bookkeeper,
            run.key,
            fields,
            capturer=self._capturer,
            namespace=self.ip.user_ns,
            packed=packed,
            returns=payload.returns,
            pool_client=run.pool.dask.id,
            datasets=dict(self.datasets),
            max_inputs=self.max_input_artifact,
            created=run.recorded,
        )
        try:
            run.send(payload, packed, priority=priority)
        except BaseException:
            run.give_back()
            raise
        self.runs.append(run)
        self.ip.user_ns["_mlrun"] = run

    def _session(
        self, name: str, gpus: int, priority: int, project: str | None, queue: str | None
    ) -> SessionHandle:
        try:
            return self.sessions.open(
                self.pool,
                name,
                gpus=gpus,
                project=self._project(project),
                idle_timeout=self.session_idle_timeout,
                priority=priority,
                queue=queue,
            )
        except LabrunError as err:
            raise MagicError(str(err)) from None

    # --- fetching and sessions ----------------------------------------------------------

    @line_magic
    def mlrun_fetch(self, line: str) -> Any:
        """``%mlrun_fetch [RUN]``: bring a cell's values in: a ``--no-wait`` cell of this
        kernel (default: the last one), or a cell re-run with ``labrun rerun``."""
        text = line.strip()
        if not text and not self.runs:
            raise UsageError("no %%mlrun cell has run in this kernel yet")
        if not text:
            run = self.runs[-1]
        else:
            try:
                run_id = int(text)
            except ValueError:
                raise UsageError(
                    f"%mlrun_fetch {text!r}: give a run number, like %mlrun_fetch 42"
                ) from None
            found = self._find_run(run_id)
            if found is None:
                self._fetch_stored(run_id)
                return None
            run = found
        values = run.result()
        names = ", ".join(sorted(values)) or "nothing"
        print(f"labrun: {run.label} brought back {names}")
        return None

    def _find_run(self, run_id: int) -> CellRun | None:
        if not self.runs:
            return None
        self.pool.bookkeeper.wait(10)
        return next((run for run in self.runs if run._run_id == run_id), None)

    def _fetch_stored(self, run_id: int) -> None:
        """The values a cell run left on the server (a rerun stores them as outputs.pkl)."""
        try:
            values, failed = stored_values(self.pool.client, run_id)
        except LabrunError as err:
            raise MagicError(str(err)) from None
        self.ip.user_ns.update(values)
        names = ", ".join(sorted(values)) or "nothing"
        print(f"labrun: run {run_id} brought back {names}")
        if failed:
            lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
            raise MagicError(f"these values of run {run_id} could not be rebuilt here:\n{lines}")

    @line_magic
    def mlrun_release(self, line: str) -> None:
        """``%mlrun_release SESSION``: end a session and give its GPUs back."""
        name = line.strip()
        if not name:
            raise UsageError("%mlrun_release SESSION: name the session to release")
        try:
            self.sessions.release(name)
        except LabrunError as err:
            raise UsageError(str(err)) from None

    # --- capture -------------------------------------------------------------------------

    @line_cell_magic
    def mlparams(self, line: str, cell: str | None = None) -> None:
        """``%mlparams lr=0.01 epochs=3``, or ``%%mlparams`` over a cell of ``name = value`` lines.

        Sets the names in the notebook and records them as the run's parameters: on the
        current run (a job, or ``labrun.init()``), and on every ``%%mlrun`` cell after.
        """
        try:
            if cell is None:
                found = parse_line(line)
                if not found:
                    raise UsageError(
                        "%mlparams NAME=VALUE ...: give at least one, like %mlparams lr=0.01"
                    )
            else:
                if line.strip():
                    raise UsageError(
                        "%%mlparams takes no options; put name = value lines in the cell"
                    )
                found = parse_assignments(cell)
        except InvalidRequest as err:
            raise UsageError(f"{'%%' if cell is not None else '%'}mlparams: {err}") from None
        self.ip.user_ns.update(found)
        self.params.update(found)
        self._log_params(found)

    def _log_params(self, params: dict[str, Any]) -> None:
        run = self._current_run()
        if run is not None and params:
            try:
                run.log_params(params)
            except LabrunError as err:
                print(
                    f"labrun: could not record parameters on run {run.id}: {err}", file=sys.stderr
                )

    def _follow_params(self, result: Any = None) -> None:
        """After each cell: a parameter that a later cell changed (papermill's injected cell)
        is recorded with the value the code now uses."""
        if not self.params:
            return
        ns = self.ip.user_ns
        changed = {}
        for name, value in self.params.items():
            if name in ns:
                now = ns[name]
                with contextlib.suppress(Exception):
                    if type(now) is not type(value) or now != value:
                        changed[name] = now
        if changed:
            self.params.update(changed)
            self._log_params(changed)

    @magic_arguments()
    @argument("name", help="the dataset's name")
    @argument("path", help="a file or folder")
    @argument("--version", default=None, help="fail unless the content is this version (like v3)")
    @line_magic
    def mldataset(self, line: str) -> None:
        """``%mldataset NAME PATH [--version vN]``: content-hash data and record its version."""
        args = parse_argstring(self.mldataset, line)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", args.name):
            raise UsageError(f"dataset name {args.name!r}: use letters, digits, '_', '.' or '-'")
        path = Path(args.path).expanduser()
        if not path.exists():
            raise UsageError(f"%mldataset {args.name}: no file or folder at {args.path!r}")
        try:
            digest, version = record_dataset(self.client, args.name, path, args.version)
        except (Conflict, InvalidRequest) as err:
            raise MagicError(str(err)) from None
        self.datasets[args.name] = version.version
        run = self._current_run()
        if run is not None:
            with contextlib.suppress(NotFound):
                run.client.link_dataset(
                    run.id, LinkDataset(dataset=args.name, version=version.version)
                )
        state = "new version" if version.created else "unchanged"
        print(
            f"dataset {args.name} {version.version} ({state}; {digest.file_count} files, "
            f"{human_size(digest.size)}, {digest.files_read} read)"
        )
        # Nothing returned: IPython would show the version's whole repr under the line.

    @magic_arguments()
    @argument("--project", default=None)
    @argument("--status", default=None, help="only runs with this status")
    @argument("--limit", type=int, default=20)
    @line_magic
    def mlruns(self, line: str) -> None:
        """``%mlruns``: recent runs with their status and latest metrics."""
        from .widgets import runs_table

        args = parse_argstring(self.mlruns, line)
        if not 1 <= args.limit <= 1000:
            raise UsageError("--limit: give a number from 1 to 1000")
        query: dict[str, Any] = {"limit": args.limit}
        if args.project:
            query["project"] = args.project
        if args.status:
            if args.status not in RunStatus.__members__:
                raise UsageError(
                    f"--status {args.status}: one of {', '.join(RunStatus.__members__)}"
                )
            query["status"] = args.status
        if self._pool is not None:
            self._pool.bookkeeper.wait(10)  # the cells run just now are listed too
        try:
            runs = self.client.list_runs(**query).runs
        except LabrunError as err:
            raise MagicError(str(err)) from None
        display(HTML(runs_table(runs)))

    def close(self) -> None:
        self.sessions.close()
        if self._pool is not None:
            self._pool.bookkeeper.wait(10)
            self._pool.close()
