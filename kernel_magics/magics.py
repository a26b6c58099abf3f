"""The labrun magics: ``%%mlrun``, ``%mlparams``, ``%mldataset``, ``%mlruns`` and friends."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display
from traitlets import Float, Int, Unicode

from labrun import environment, settings, shipping, tracking
from labrun.client import Client
from labrun.datahash import hash_path, human_size
from labrun.delivery import ArtifactOp, CreateRunOp, LinkDatasetOp
from labrun.errors import Conflict, InvalidRequest, LabrunError, NotFound
from labrun.models import (
    CreateDatasetVersion,
    CreateRun,
    DescribeRun,
    LinkDataset,
    RunKind,
    RunStatus,
)
from labrun.params import parse_assignments, parse_line

from . import remote
from .analysis import cell_names

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SESSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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
        self._pool: remote.Pool | None = None
        self._client: Client | None = None
        self.params: dict[str, Any] = {}
        self.datasets: dict[str, str] = {}
        self.runs: list[remote.CellRun] = []
        self.sessions: dict[str, remote.SessionHandle] = {}
        self._said_gpus = False
        self._queues: tuple[float, dict[str, int]] | None = None
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
    def pool(self) -> remote.Pool:
        if self._pool is None:
            try:
                self._pool = remote.Pool(self.client)
            except LabrunError as err:
                raise MagicError(str(err)) from None
        return self._pool

    def _project(self, given: str | None) -> str:
        return given or self.project or os.environ.get(settings.PROJECT) or "default"

    def _queue_priority(self, name: str | None) -> int:
        if name is None:
            return 0
        if self._queues is None or time.monotonic() - self._queues[0] > 30:
            listed = self.client.queues().queues
            self._queues = (time.monotonic(), {q.name: q.priority for q in listed})
        queues = self._queues[1]
        if name not in queues:
            known = ", ".join(sorted(queues)) or "none"
            raise UsageError(
                f"--queue {name}: no such queue (queues: {known}); `labrun queues create` adds one"
            )
        return queues[name]

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
        out = None
        if args.out is not None:
            out = [n.strip() for n in args.out.split(",") if n.strip()]
            bad = [n for n in out if not NAME.match(n)]
            if bad or not out:
                raise UsageError(
                    f"--out {args.out!r}: give Python names separated by commas, like --out model,losses"
                )
        priority = self._queue_priority(args.queue)
        source = self.ip.transform_cell(cell)
        try:
            names = cell_names(source)
        except SyntaxError:
            # Let IPython show the error where the user wrote it.
            self.ip.showsyntaxerror()
            return None
        pool = self.pool
        gpus = self._gpus(args.gpus, pool)
        ns = self.ip.user_ns
        hidden = self.ip.user_ns_hidden
        values = {n: ns[n] for n in names.reads if n in ns and n not in hidden}
        session = None
        if args.session:
            session = self._session(args.session, gpus, priority, args.project)
            # The session's own values are the truth: send only what the notebook changed.
            values = {n: v for n, v in values.items() if session.returned.get(n, remote) is not v}
        packed, failed = shipping.ship(values, local_roots=[str(Path.cwd())])
        if failed:
            lines = "\n".join(f"  {name} ({why})" for name, why in failed.items())
            raise MagicError(
                f"cannot send these values to the pool:\n{lines}\n"
                "Create them inside the cell instead, pass what they are built from, or keep "
                "them in a --session so they never leave the worker."
            )
        key = uuid.uuid4().hex
        label = f"cell {args.name}" if args.name else "the cell"
        run = remote.CellRun(pool, key=key, label=label, namespace=ns, session=session)
        returns = out if out is not None else names.assigns
        payload = {
            "token": key,
            "key": key,
            "topic": pool.topic,
            "source": cell,
            "returns": returns,
            "explicit": out is not None,
            "cuda": _local_cuda(),
            "gpus": gpus,
        }
        if args.no_wait:
            self._record(run, cell, args, gpus, packed, session, returns)
            self._send(run, payload, packed, session, gpus, priority)
            self._keep(run)
            run.follow_in_background(lambda event: None)
            return run
        # The record waits while the cell is in flight, unless the cell turns out long.
        with pool.bookkeeper.busy():
            self._record(run, cell, args, gpus, packed, session, returns)
            self._send(run, payload, packed, session, gpus, priority)
            self._keep(run)
            with remote.interruptible(run):
                try:
                    outcome = run.pump(remote.show_event, args.timeout)
                except TimeoutError:
                    run.cancel()
                    raise MagicError(
                        f"{run.label} did not finish within --timeout {args.timeout:g} s "
                        "and was cancelled"
                    ) from None
            remote.stream_flush()
            run.settle(outcome)
        return None

    def _keep(self, run: remote.CellRun) -> None:
        self.runs.append(run)
        self.ip.user_ns["_mlrun"] = run

    @staticmethod
    def _send(
        run: remote.CellRun,
        payload: dict[str, Any],
        packed: dict[str, Any],
        session: remote.SessionHandle | None,
        gpus: int,
        priority: int,
    ) -> None:
        if session is not None:
            actor = session.actor
            run.send(lambda: actor.run(payload, packed))
        else:
            from labrun.executor.cells import run_cell

            run.send(
                lambda: run.pool.dask.submit(
                    run_cell,
                    payload,
                    packed,
                    resources={"GPU": gpus} if gpus else None,
                    priority=priority,
                    pure=False,
                    key=f"labrun-cell-{run.key}",
                )
            )

    def _gpus(self, asked: int | None, pool: remote.Pool) -> int:
        if asked is not None:
            return int(asked)
        if pool.has_gpus:
            return 1
        if not self._said_gpus:
            print("labrun: the pool has no GPU workers; cells run on its CPU workers (--gpus 0)")
            self._said_gpus = True
        return 0

    def _session(
        self, name: str, gpus: int, priority: int, project: str | None
    ) -> remote.SessionHandle:
        found = self.sessions.get(name)
        if found is not None:
            return found
        try:
            handle = remote.start_session(
                self.pool,
                name,
                gpus=gpus,
                project=self._project(project),
                idle_timeout=self.session_idle_timeout,
                priority=priority,
            )
        except LabrunError as err:
            raise MagicError(f"could not start session {name!r}: {err}") from None
        self.sessions[name] = handle
        where = f" on GPU {','.join(map(str, handle.devices))}" if handle.devices else ""
        print(f"labrun: session {name!r} started on {handle.worker}{where}")
        return handle

    def _record(
        self,
        run: remote.CellRun,
        cell: str,
        args: Any,
        gpus: int,
        packed: dict[str, Any],
        session: remote.SessionHandle | None,
        returns: list[str],
    ) -> None:
        """Create the run and store its inputs from the outbox's thread, off the cell's path."""
        pool = run.pool
        params = dict(self.params)
        datasets = dict(self.datasets)
        project = self._project(args.project)
        namespace = self.ip.user_ns
        limit = self.max_input_artifact
        capturer = self._capturer

        def create() -> list[Any]:
            import cloudpickle

            # The outbox makes these after the cell (or 0.25 s into a long one): a short
            # cell is over before its run is recorded, and the worker waits for the record.
            try:
                captured = capturer.capture(namespace)
            except Exception as err:  # noqa: BLE001 - a partial record beats none
                captured = {**environment.basic(), "capture_error": f"{type(err).__name__}: {err}"}
            captured["inputs"] = shipping.digests(packed)
            captured["outputs"] = list(returns)  # what a `labrun rerun` keeps
            # The kernel's Dask client: while it is connected, the kernel records this cell
            # itself; once it is gone, the server settles the run from what the worker kept.
            captured["pool_client"] = pool.dask.id
            ops: list[Any] = [
                CreateRunOp(
                    body=CreateRun(
                        key=run.key,
                        project=project,
                        name=args.name,
                        kind=RunKind.cell,
                        status=RunStatus.queued,
                        params=params,
                        queue=args.queue,
                        requested_gpus=gpus,
                        source=cell,
                        notebook=captured.get("notebook"),
                        environment=captured,
                        parent_id=session.run_id if session else None,
                    )
                )
            ]
            ops += [
                LinkDatasetOp(run_key=run.key, body=LinkDataset(dataset=name, version=version))
                for name, version in datasets.items()
            ]
            # Arrays count by their size, so a large one is never pickled just to be skipped.
            raw = sum(int(getattr(v, "nbytes", 0)) for kind, v in packed.values() if kind == "raw")
            if packed and raw <= limit:
                blob = cloudpickle.dumps({"values": packed}, protocol=5)
                if len(blob) <= limit:
                    ops.append(
                        ArtifactOp(
                            run_key=run.key, name="inputs.pkl", data=blob, artifact_kind="inputs"
                        )
                    )
            return ops

        def created(answer: Any) -> None:
            if isinstance(answer, DescribeRun):
                run.run_id = answer.id

        pool.bookkeeper.submit(create, on_sent=created)

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

    def _find_run(self, run_id: int) -> remote.CellRun | None:
        if not self.runs:
            return None
        self.pool.bookkeeper.wait(10)
        for run in self.runs:
            if run._run_id == run_id:
                return run
        return None

    def _fetch_stored(self, run_id: int) -> None:
        """The values a cell run left on the server (a rerun stores them as outputs.pkl)."""
        import cloudpickle

        client = self.pool.client
        try:
            run = client.get_run(run_id)
        except NotFound:
            raise MagicError(f"there is no run {run_id}; `labrun runs` lists them") from None
        if not run.status.finished:
            raise MagicError(
                f"run {run_id} is {run.status.value}; fetch its values once it has finished "
                f"(`labrun logs {run_id} --follow` shows it run)"
            )
        try:
            blob = client.download_artifact(run_id, "outputs.pkl")
        except NotFound:
            raise MagicError(
                f"run {run_id} has no stored values: a cell's values live only with the kernel "
                f"that ran it (and outlive neither it nor a restart), unless the run is a "
                f"`labrun rerun`; `labrun show {run_id}` has its log"
            ) from None
        values, failed = shipping.unpack_all(cloudpickle.loads(blob)["values"])
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
        handle = self.sessions.pop(name, None)
        if handle is None:
            known = ", ".join(sorted(self.sessions)) or "none"
            raise UsageError(f"no session named {name!r} in this kernel (sessions: {known})")
        handle.release()
        print(f"labrun: session {name!r} released")

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
            digest = hash_path(path)
            version = self.client.add_dataset_version(
                args.name,
                CreateDatasetVersion(
                    content_hash=digest.content_hash,
                    size=digest.size,
                    file_count=digest.file_count,
                    source_path=str(path.resolve()),
                    manifest=digest.manifest,
                    version=args.version,
                ),
            )
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
        for handle in list(self.sessions.values()):
            handle.release()
        self.sessions.clear()
        if self._pool is not None:
            self._pool.bookkeeper.wait(10)
            self._pool.close()


def _local_cuda() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())
