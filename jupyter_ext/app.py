"""The labrun Jupyter Server extension: settings, the store, the REST API."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol
from jupyter_server.auth import AllowAllAuthorizer, IdentityProvider
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Float, Int, List, Unicode, default

from labrun.errors import LabrunError
from labrun.executor import quick_exit
from labrun.settings import API_PREFIX, data_dir

from .access import PoolToken, RunAccess, TokenGuard
from .audit import AuditLog
from .dask_pool import DispatcherSettings
from .dispatcher import Dispatcher
from .events import EventBus
from .handlers.base import NoRouteHandler, tornado_pattern
from .openapi import build_document
from .relay import EventRelay
from .roles import RolesConfig, parse_config
from .routes import ROUTES
from .store import Database, Store, check_schema
from .store.database import check_writable, ensure_folder, sqlite_url
from .store.leases import server_id


class LabRun(ExtensionApp):
    """Runs, metrics, artifacts, datasets, queues and GPUs behind ``/labrun/api/v1``.

    Configure with ``c.LabRun.<name>`` in a Jupyter config file, ``--LabRun.<name>=...`` on
    the command line, or the ``LABRUN_<NAME>`` environment variable.
    """

    name = "labrun"
    description = "labrun: notebook runs on a shared GPU pool"
    # `labrun server` runs this extension alone; inside JupyterLab, Lab loads it.
    load_other_extensions = True

    db_url = Unicode(
        help="SQLAlchemy URL of the run store. Empty: SQLite in the Jupyter data dir. "
        "For a team: postgresql+psycopg://USER@HOST:PORT/DB (env LABRUN_DB_URL)."
    ).tag(config=True)

    artifact_root = Unicode(
        help="Where artifacts are stored: a directory or any fsspec URL. Empty: "
        "'artifacts' beside the embedded database (env LABRUN_ARTIFACT_ROOT)."
    ).tag(config=True)

    auto_upgrade = Bool(
        True,
        help="Upgrade an older database schema on start. When False, an older schema stops "
        "the server with the `labrun db upgrade` command to run.",
    ).tag(config=True)

    # The one setting both sides of a cut link derive their time from: the server loses a
    # silent worker's jobs LOST_GRACE (dispatcher.py) after this, and the worker, which gets
    # it with its plugins, stops them itself after two thirds of it (executor/fencing.py).
    worker_timeout = Float(
        30.0,
        help="Seconds without a heartbeat after which a worker counts as gone (its jobs are "
        "run again elsewhere). A worker whose heartbeats do not get through stops its jobs "
        "itself after two thirds of this, before they run elsewhere.",
    ).tag(config=True)

    user = Unicode(
        help="Whom runs are recorded under when Jupyter's identity provider does not name "
        "users (a single-user server), and who the server's own pool token acts for. "
        "Default: LABRUN_USER, else under JupyterHub the hub user the server is for, else "
        "the user the server runs as."
    ).tag(config=True)

    admins = List(
        Unicode(),
        help="Users who may change and cancel anyone's runs; others change only their own "
        "(env LABRUN_ADMINS, comma-separated). The same as c.LabRun.roles' 'admin'.",
    ).tag(config=True)

    roles = Dict(
        help="Who may change whose runs, beyond their own: {'admin': [user, ...], 'lead': "
        "{user: [project, ...]}}. A lead changes and cancels the runs of the projects they "
        "lead; an admin, every run. Under JupyterHub, the groups 'labrun-admin' and "
        "'labrun-lead:<project>' give the same roles.",
    ).tag(config=True)

    token_lifetime = Float(
        30 * 86400.0,
        help="Seconds a token from `labrun tokens create` (POST tokens) lives, unless it asks "
        "for less: the default and the most.",
    ).tag(config=True)

    job_token_lifetime = Float(
        7 * 86400.0,
        help="Seconds the token of a notebook job (scoped to its run, in its kernel) lives at "
        "most; the server revokes it once the job ends.",
    ).tag(config=True)

    pool_token_lifetime = Float(
        86400.0,
        help="Seconds the token of the pool's workers lives; the server issues a new one at "
        "half that, and the workers take it before theirs expires.",
    ).tag(config=True)

    dask_scheduler = Unicode(
        help="Address of the Dask scheduler of the pool (tcp://host:8786, or tls://host:8786 "
        "with Dask's TLS settings). Empty: the server starts a local pool, which uses TLS "
        "where Dask's config requires encryption (env LABRUN_DASK_SCHEDULER)."
    ).tag(config=True)

    start_pool = Bool(
        True,
        help="Start a local Dask pool when no dask_scheduler is set. When False and no "
        "scheduler is set, jobs are stored as queued and wait (env LABRUN_START_POOL=0).",
    ).tag(config=True)

    local_workers = Int(
        0,
        help="CPU workers of the local pool where there is no GPU (0: two, or one per core "
        "on a single-core machine). With GPUs: one worker per GPU.",
    ).tag(config=True)

    warm_kernels = Int(
        1, help="Kernels kept started per worker thread, so a job does not wait for one."
    ).tag(config=True)

    max_attempts = Int(3, help="Times a job is dispatched before a lost job counts as failed.").tag(
        config=True
    )

    max_gpus_per_user = Int(
        0, help="GPUs one user may hold at once across the pool (0: no limit)."
    ).tag(config=True)

    adaptive_backlog = Int(
        0,
        help="Jobs handed to Dask beyond what the pool's workers can take now, so an "
        "adaptive cluster (cluster.adapt(minimum, maximum)) sees the demand and starts GPU "
        "workers. Set it to the adaptive maximum; 0 for a fixed pool.",
    ).tag(config=True)

    scheduler_timeout = Float(
        10.0, help="Seconds to wait for the Dask scheduler when connecting to it."
    ).tag(config=True)

    max_body_size = Int(
        16 * 1024 * 1024,
        help="The largest JSON request body in bytes (a batch of metric points, a job's "
        "notebook); a larger one is refused with 413. Parsing holds the GIL, so a body at "
        "the limit holds up other requests for a moment even off the event loop. Artifact "
        "uploads are bounded by c.ServerApp.max_body_size instead.",
    ).tag(config=True)

    lease_seconds = Float(
        3.0,
        help="Seconds the scheduler of record's lease lasts unless renewed (about three "
        "times in that time). When the server holding it dies, another server of the same "
        "store takes over within this time and a renewal.",
    ).tag(config=True)

    public_url = Unicode(
        help="The URL workers use to reach this server. Empty: the server's own "
        "connection URL, right for a local pool (env LABRUN_PUBLIC_URL)."
    ).tag(config=True)

    @default("dask_scheduler")
    def _dask_scheduler_default(self) -> str:
        return os.environ.get("LABRUN_DASK_SCHEDULER", "")

    @default("start_pool")
    def _start_pool_default(self) -> bool:
        return os.environ.get("LABRUN_START_POOL", "1").lower() not in ("0", "false", "no")

    @default("public_url")
    def _public_url_default(self) -> str:
        return os.environ.get("LABRUN_PUBLIC_URL", "")

    @default("db_url")
    def _db_url_default(self) -> str:
        return os.environ.get("LABRUN_DB_URL", "")

    @default("artifact_root")
    def _artifact_root_default(self) -> str:
        return os.environ.get("LABRUN_ARTIFACT_ROOT", "")

    @default("admins")
    def _admins_default(self) -> list[str]:
        return [u.strip() for u in os.environ.get("LABRUN_ADMINS", "").split(",") if u.strip()]

    @default("user")
    def _user_default(self) -> str:
        # A JupyterHub single-user server is its hub user's, whatever OS account it runs as.
        return (
            os.environ.get("LABRUN_USER") or os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
        )

    # Set in initialize_settings, never at import: starting an engine is a side effect.
    db: Database
    store: Store
    events: EventBus
    roles_config: RolesConfig
    issued_identity: IdentityProvider
    issued_authorizer: AllowAllAuthorizer
    guard: TokenGuard
    access: RunAccess
    audit: AuditLog
    pool_token: PoolToken
    openapi: dict[str, Any]
    dispatcher: Dispatcher
    relay: EventRelay
    server_id: str
    _stopping: asyncio.Future[None] | None = None

    def initialize_settings(self) -> None:
        # This server among those sharing the store: leases, events and the audit log say it.
        self.server_id = server_id()
        try:
            self.roles_config = parse_config(self.roles)
        except ValueError as err:
            raise SystemExit(f"Error: labrun cannot start: {err}") from None
        # A request with a token this server issued: prepare() has named its user already,
        # which Jupyter's base identity provider takes; labrun checks what it may do.
        self.issued_identity = IdentityProvider(token="")
        self.issued_authorizer = AllowAllAuthorizer(identity_provider=self.issued_identity)
        try:
            self._open_store()
        except Exception as err:
            if hasattr(self, "db"):
                self.db.close()
            if isinstance(err, LabrunError):
                reason = err.message
            else:
                self.log.exception("labrun: the store failed to open")
                reason = f"{type(err).__name__}: {err}"
            # Jupyter Server logs an Exception from an extension's start and serves on
            # without it, so every labrun request would get a 404 page. A SystemExit gets
            # through and stops the server before it listens, with this line last.
            raise SystemExit(f"Error: labrun cannot start: {reason}") from None
        self.events = EventBus()
        self.openapi = build_document(ROUTES)
        self.dispatcher = Dispatcher(
            self.store,
            DispatcherSettings(
                scheduler=self.dask_scheduler,
                start_local=self.start_pool,
                local_workers=self.local_workers,
                local_directory=str(data_dir() / "dask"),
                max_attempts=self.max_attempts,
                max_gpus_per_user=self.max_gpus_per_user,
                worker_timeout=self.worker_timeout,
                warm_kernels=self.warm_kernels,
                connect_timeout=self.scheduler_timeout,
                adaptive_backlog=self.adaptive_backlog,
                job_token_lifetime=self.job_token_lifetime,
            ),
            publish=self.events.publish,
            call=self.db.run,
            server=self.server_id,
            user=self.user,
            lease_seconds=self.lease_seconds,
        )
        self.relay = EventRelay(
            self.events, self.store, self.db, self.server_id, self.dispatcher.on_event
        )
        self.pool_token = PoolToken(
            self.store,
            self.db.run,
            user=self.user,
            lifetime=self.pool_token_lifetime,
            publish=self.dispatcher.use_token,
        )
        self.log.info(
            "labrun: store at %s", self.db.engine.url.render_as_string(hide_password=True)
        )

    def _open_store(self) -> None:
        """Open the store and check everything it needs, at start rather than first use:
        the schema, a real write to the database, and the folders labrun writes to."""
        local_pool = self.start_pool and not self.dask_scheduler
        if not (self.db_url and self.artifact_root) or local_pool:
            fix = "set LABRUN_DATA_DIR to a folder this user can write"
            ensure_folder(data_dir(), "labrun's data", fix, probe=True)
        url = self.db_url or sqlite_url(data_dir() / "labrun.db")
        self.db = Database(url)
        # At start-up, before the server takes requests: the one time the store is used
        # synchronously.
        check_schema(self.db.engine, auto_upgrade=self.auto_upgrade)
        check_writable(self.db.engine)
        root = self.artifact_root or str(data_dir() / "artifacts")
        if get_protocol(root) in LocalFileSystem.protocol:
            fix = (
                "set c.LabRun.artifact_root (or LABRUN_ARTIFACT_ROOT) to a folder this user "
                "can write"
            )
            ensure_folder(Path(url_to_fs(root)[1]), "artifacts", fix, probe=True)
        self.store = Store(self.db, artifact_root=root, worker_timeout=self.worker_timeout)
        self.guard = TokenGuard(self.store, self.db.run)
        self.access = RunAccess(self.store, self.db.run)
        self.audit = AuditLog(self.store.audit, self.db.run, server=self.server_id)

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            (API_PREFIX + tornado_pattern(path), handler) for path, handler in ROUTES
        )
        # Last: any other path under the API is a JSON 404, not Jupyter's HTML page.
        self.handlers.append((API_PREFIX + "(?:/.*)?", NoRouteHandler))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # The server's URL is known only now; workers use it to report back.
        settings = self.dispatcher.settings
        settings.server_url = self.public_url or serverapp.connection_url
        quick_exit()
        if settings.start_local and not settings.scheduler:
            # The local pool's processes share the server's process group, so a terminal's
            # Ctrl-C has reached them too: stop at once, as on SIGTERM. Jupyter would ask
            # to confirm (in a terminal) or skip every extension's stop (elsewhere).
            signal.signal(signal.SIGINT, lambda signum, frame: self._stop_on_signal(serverapp))
        await self.relay.start()
        if self.dispatcher.state != "disabled":
            await self.pool_token.start()
        await self.dispatcher.start()

    def _stop_on_signal(self, serverapp: Any) -> None:
        self.log.critical("labrun: received SIGINT, stopping")
        serverapp.stop(from_signal=True)

    async def stop_extension(self) -> None:
        # A second signal during the stop runs Jupyter's clean-up again: one stop serves both.
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if hasattr(self, "pool_token"):
            await self.pool_token.stop()
        if hasattr(self, "dispatcher"):
            await self.dispatcher.stop()
        if hasattr(self, "relay"):
            await self.relay.stop()
        if hasattr(self, "audit"):
            # Last before the database closes: every request answered is written.
            await self.audit.stop()
        if hasattr(self, "db"):
            self.db.close()


main = launch_new_instance = LabRun.launch_instance
