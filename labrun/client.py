"""The HTTP client of the labrun REST API, and how it finds a server.

Every part of labrun that talks to the server (the public API, the CLI, kernels, workers)
goes through :class:`Client`: one place that authenticates, and that turns an error
response back into the :mod:`labrun.errors` class the server raised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import psutil
from jupyter_core.paths import jupyter_runtime_dir
from pydantic import BaseModel
from typing_extensions import Self

from labrun import settings
from labrun.errors import LabrunError, ServerUnavailable, TokenExpired, error_from_response
from labrun.models import (
    AppendLogs,
    ArtifactList,
    AuditList,
    ClaimRun,
    Comparison,
    CreateDatasetVersion,
    CreateQueue,
    CreateReport,
    CreateRun,
    CreateToken,
    DatasetList,
    DescribeArtifact,
    DescribeDataset,
    DescribeDatasetVersion,
    DescribeGrant,
    DescribeQueue,
    DescribeReport,
    DescribeRun,
    DescribeSweep,
    DescribeToken,
    DescribeWorker,
    GpuList,
    GrantList,
    Identity,
    IngestSamples,
    IssuedToken,
    LinkDataset,
    LogEntryIn,
    LogMetrics,
    LogTail,
    MetricsIngested,
    PoolStatus,
    QueueList,
    RegisterWorker,
    ReleaseGrants,
    ReportList,
    RequestGrant,
    RerunRun,
    RunList,
    RunMetrics,
    ServerVersion,
    SubmitJob,
    SubmitSweep,
    TokenList,
    TransitionList,
    UpdateRun,
    WorkerList,
)

M = TypeVar("M", bound=BaseModel)

HOW_TO_CONNECT = (
    "start `jupyter lab` or `labrun server` on this machine first (either runs the pool "
    f"too), or set {settings.SERVER_URL} (e.g. http://127.0.0.1:8888/) and {settings.TOKEN} "
    "(the server's token) to use another server"
)


def running_jupyter_servers() -> Iterator[dict[str, Any]]:
    """The Jupyter servers of this user on this machine, newest first.

    Read from the files each server writes in the Jupyter runtime dir, as
    ``jupyter server list`` does, without importing Jupyter Server.
    """
    runtime = Path(jupyter_runtime_dir())
    files = sorted(runtime.glob("jpserver-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and "url" in info and psutil.pid_exists(int(info.get("pid", 0))):
            yield info


HUB_TOKEN = "JUPYTERHUB_API_TOKEN"


def discover(timeout: float = 2.0) -> tuple[str, str]:
    """The URL and token of the labrun server to use.

    ``LABRUN_SERVER_URL`` and ``LABRUN_TOKEN`` win; then, inside a JupyterHub single-user
    server, that server (``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_API_TOKEN``); otherwise the
    first running local Jupyter server that has the labrun extension.
    """
    url = os.environ.get(settings.SERVER_URL)
    if url:
        return url, os.environ.get(settings.TOKEN, "")
    # Inside a JupyterHub single-user server (a kernel, a terminal): that server, with its
    # hub token, which acts for the hub user the server runs for. Under JupyterHub, users
    # may share an OS account and so a runtime dir: the newest server there may be another's.
    hub_url, hub_token = os.environ.get("JUPYTERHUB_SERVICE_URL"), os.environ.get(HUB_TOKEN)
    if hub_url and hub_token:
        return hub_url, hub_token
    for info in running_jupyter_servers():
        base, token = info["url"], info.get("token", "")
        try:
            response = httpx.get(
                f"{base.rstrip('/')}{settings.API_PREFIX}/version",
                headers={"Authorization": f"token {token}"} if token else {},
                timeout=timeout,
            )
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            return base, token
    raise ServerUnavailable(f"no labrun server found: {HOW_TO_CONNECT}")


def _url_file_reader() -> Callable[[], str | None] | None:
    """What reads the server's URL from ``LABRUN_SERVER_URL_FILE``, where it is set."""
    path = os.environ.get(settings.SERVER_URL_FILE)
    if not path:
        return None

    def read() -> str | None:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None

    return read


# Called with (url, old token, new token) when a client takes a renewed token. The background
# outboxes (labrun.delivery, which builds on this module) register here, so what waits in
# them is sent with the new token.
TOKEN_RENEWED: list[Callable[[str, str, str], None]] = []


class Client:
    """A connection to one labrun server.

    Parameters
    ----------
    url, token:
        The server's base URL (``http://host:8888/``) and a token: the Jupyter Server's
        own, or one it issued (``POST /labrun/api/v1/tokens``). Both default to
        :func:`discover`.
    timeout:
        Seconds to wait for any one request.
    renew:
        Called when the server says the token expired: a newer token to retry the request
        with once, or None (a worker asks its pool for the one the server renewed).
    relocate:
        Called when the server cannot be reached: the URL of the server to use instead
        (another server of the same store), to retry the request there once, or None.
        Default: the URL in the file ``LABRUN_SERVER_URL_FILE`` names, if set.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        renew: Callable[[], str | None] | None = None,
        relocate: Callable[[], str | None] | None = None,
    ):
        if url is None:
            url, found_token = discover()
            token = found_token if token is None else token
        self.url = url.rstrip("/") + "/"
        self.token = token or ""
        self.renew = renew
        self.relocate = relocate if relocate is not None else _url_file_reader()
        headers = {"Authorization": f"token {self.token}"} if self.token else {}
        self._http = httpx.Client(
            base_url=self.url.rstrip("/") + settings.API_PREFIX, headers=headers, timeout=timeout
        )

    def set_token(self, token: str) -> None:
        """Use ``token`` from now on (a worker taking its pool's renewed token).

        The process's outbox for the old token takes the new one too: what waits in it is
        sent with a token that is still valid.
        """
        old, self.token = self.token, token
        self._http.headers["Authorization"] = f"token {token}"
        for renewed in TOKEN_RENEWED:
            renewed(self.url, old, token)

    def set_url(self, url: str) -> None:
        """Use the server at ``url`` from now on (one sharing this one's store)."""
        self.url = url.rstrip("/") + "/"
        self._http.base_url = httpx.URL(self.url.rstrip("/") + settings.API_PREFIX)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the one request function ------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if body is not None:
            content = body.model_dump_json(exclude_unset=True).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        sent_with = self.token
        try:
            try:
                response = self._http.request(
                    method, path, params=query, content=content, headers=headers
                )
            except httpx.TransportError:
                sent_to = self.url
                # (A relocate hook may move this client itself before it answers.)
                moved = self.relocate() if self.relocate is not None else None
                if moved is None or moved.rstrip("/") + "/" == sent_to:
                    raise
                self.set_url(moved)
                response = self._http.request(
                    method, path, params=query, content=content, headers=headers
                )
            if response.status_code == 403 and self.renew is not None and _expired(response):
                renewed = self.renew()  # may have set this client's token already
                if renewed is not None and renewed != self.token:
                    self.set_token(renewed)
                if self.token != sent_with:
                    response = self._http.request(
                        method, path, params=query, content=content, headers=headers
                    )
        except httpx.TransportError as err:
            raise ServerUnavailable(
                f"cannot reach the labrun server at {self.url} ({err.__class__.__name__}: {err}); "
                f"is it running? Otherwise {HOW_TO_CONNECT}"
            ) from err
        if response.status_code >= 400:
            try:
                error = response.json()
                message, code = error.get("message", response.text), error.get("code")
            except ValueError:
                message, code = response.text or response.reason_phrase, None
            if response.status_code == 403 and message in ("", "Forbidden"):
                # Jupyter's own refusal says no more than that; labrun's say why.
                message = f"the server at {self.url} refused the token ({message}); check {settings.TOKEN}"
            raise error_from_response(response.status_code, code, message)
        return response

    def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate_json(self.request("GET", path, params=params).content)

    def _send(self, model: type[M], method: str, path: str, body: BaseModel | None = None) -> M:
        return model.model_validate_json(self.request(method, path, body=body).content)

    # --- runs ----------------------------------------------------------------------

    def version(self) -> ServerVersion:
        return self._get(ServerVersion, "/version")

    def identity(self) -> Identity:
        """Who this client acts as on the server, and their roles."""
        return self._get(Identity, "/users/me")

    def create_run(self, req: CreateRun) -> DescribeRun:
        return self._send(DescribeRun, "POST", "/runs", req)

    def get_run(self, run_id: int) -> DescribeRun:
        return self._get(DescribeRun, f"/runs/{run_id}")

    def list_runs(self, **query: Any) -> RunList:
        return self._get(RunList, "/runs", **query)

    def update_run(self, run_id: int, req: UpdateRun) -> DescribeRun:
        return self._send(DescribeRun, "PATCH", f"/runs/{run_id}", req)

    def cancel_run(self, run_id: int) -> DescribeRun:
        return self._send(DescribeRun, "POST", f"/runs/{run_id}/cancel")

    def log_params(self, run_id: int, params: dict[str, Any]) -> dict[str, Any]:
        response = self.request(
            "POST",
            f"/runs/{run_id}/params",
            content=json.dumps({"params": params}, default=str).encode(),
            headers={"Content-Type": "application/json"},
        )
        return response.json()

    def log_metrics(self, run_id: int, batch: LogMetrics) -> MetricsIngested:
        return self._send(MetricsIngested, "POST", f"/runs/{run_id}/metrics", batch)

    def post_metrics_json(self, run_id: int, payload: bytes) -> MetricsIngested:
        """Send a batch already encoded as ``LogMetrics`` JSON (the sender's fast path)."""
        response = self.request(
            "POST",
            f"/runs/{run_id}/metrics",
            content=payload,
            headers={"Content-Type": "application/json"},
        )
        return MetricsIngested.model_validate_json(response.content)

    def metrics(self, run_id: int, **query: Any) -> RunMetrics:
        return self._get(RunMetrics, f"/runs/{run_id}/metrics", **query)

    def append_logs(
        self, run_id: int, entries: Iterable[LogEntryIn], *, attempt: int | None = None
    ) -> LogTail:
        # The attempt only when given: a server older than the field rejects it.
        extra = {"attempt": attempt} if attempt is not None else {}
        body = AppendLogs(entries=list(entries), **extra)
        return self._send(LogTail, "POST", f"/runs/{run_id}/logs", body)

    def logs(
        self, run_id: int, offset: int = 0, limit: int = 1000, *, attempt: int | None = None
    ) -> LogTail:
        return self._get(
            LogTail, f"/runs/{run_id}/logs", offset=offset, limit=limit, attempt=attempt
        )

    def upload_artifact(
        self,
        run_id: int,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        kind: str = "file",
        attempt: int | None = None,
    ) -> DescribeArtifact:
        """Upload ``data`` as the run's artifact ``name``; ``attempt``: the dispatched attempt
        it comes from (a worker's), refused once that attempt was lost."""
        headers = {
            "Content-Type": content_type or "application/octet-stream",
            "X-Labrun-Artifact-Kind": kind,
        }
        if attempt is not None:
            headers["X-Labrun-Attempt"] = str(attempt)
        response = self.request(
            "PUT", f"/runs/{run_id}/artifacts/{_quote_path(name)}", content=data, headers=headers
        )
        return DescribeArtifact.model_validate_json(response.content)

    def artifacts(self, run_id: int) -> ArtifactList:
        return self._get(ArtifactList, f"/runs/{run_id}/artifacts")

    def download_artifact(self, run_id: int, name: str) -> bytes:
        return self.request("GET", f"/runs/{run_id}/artifacts/{_quote_path(name)}").content

    def compare(self, run_ids: Iterable[int]) -> Comparison:
        return self._get(Comparison, "/compare", runs=list(run_ids))

    def run_datasets(self, run_id: int) -> list[dict[str, Any]]:
        return self.request("GET", f"/runs/{run_id}/datasets").json()

    # --- datasets, pool ------------------------------------------------------------

    def datasets(self) -> DatasetList:
        return self._get(DatasetList, "/datasets")

    def dataset(self, name: str) -> DescribeDataset:
        return self._get(DescribeDataset, f"/datasets/{_quote_path(name)}")

    def add_dataset_version(self, name: str, req: CreateDatasetVersion) -> DescribeDatasetVersion:
        return self._send(
            DescribeDatasetVersion, "POST", f"/datasets/{_quote_path(name)}/versions", req
        )

    def link_dataset(self, run_id: int, req: LinkDataset) -> DescribeDatasetVersion:
        return self._send(DescribeDatasetVersion, "POST", f"/runs/{run_id}/datasets", req)

    def queues(self) -> QueueList:
        return self._get(QueueList, "/queues")

    def create_queue(self, req: CreateQueue) -> DescribeQueue:
        return self._send(DescribeQueue, "POST", "/queues", req)

    def workers(self) -> WorkerList:
        return self._get(WorkerList, "/workers")

    def gpus(self) -> GpuList:
        return self._get(GpuList, "/gpus")

    def heartbeat(self, worker_id: str, req: RegisterWorker) -> DescribeWorker:
        return self._send(DescribeWorker, "PUT", f"/workers/{_quote_path(worker_id)}", req)

    def post_samples(self, req: IngestSamples) -> None:
        self.request("POST", "/gpus/samples", body=req)

    def pool(self) -> PoolStatus:
        return self._get(PoolStatus, "/pool")

    def grants(self) -> GrantList:
        return self._get(GrantList, "/grants")

    def request_grant(self, req: RequestGrant) -> DescribeGrant:
        return self._send(DescribeGrant, "POST", "/grants", req)

    def release_grants(self, keys: list[str]) -> GrantList:
        return self._send(GrantList, "POST", "/grants/release", ReleaseGrants(keys=keys))

    # --- jobs ------------------------------------------------------------------------

    def submit_job(self, req: SubmitJob) -> DescribeRun:
        return self._send(DescribeRun, "POST", "/jobs", req)

    def submit_sweep(self, req: SubmitSweep) -> DescribeSweep:
        return self._send(DescribeSweep, "POST", "/sweeps", req)

    def sweep(self, sweep_id: int) -> DescribeSweep:
        return self._get(DescribeSweep, f"/sweeps/{sweep_id}")

    def create_report(self, req: CreateReport) -> DescribeReport:
        return self._send(DescribeReport, "POST", "/reports", req)

    def reports(self, **query: Any) -> ReportList:
        return self._get(ReportList, "/reports", **query)

    def report_html(self, report_id: int) -> bytes:
        return self.request("GET", f"/reports/{report_id}/html").content

    def rerun(self, run_id: int, *, strict: bool = False) -> DescribeRun:
        body = RerunRun(strict=True) if strict else None
        return self._send(DescribeRun, "POST", f"/runs/{run_id}/rerun", body)

    def transitions(self, run_id: int) -> TransitionList:
        return self._get(TransitionList, f"/runs/{run_id}/transitions")

    def claim_run(self, run_id: int, req: ClaimRun) -> DescribeRun:
        return self._send(DescribeRun, "POST", f"/runs/{run_id}/claim", req)

    # --- tokens --------------------------------------------------------------------

    def issue_token(
        self, name: str, *, run: int | None = None, lifetime: float | None = None
    ) -> IssuedToken:
        """A token acting for this client's user: for all they may do, or scoped to ``run``."""
        return self._send(
            IssuedToken, "POST", "/tokens", CreateToken(name=name, run=run, lifetime=lifetime)
        )

    def tokens(self, *, all: bool = False, limit: int = 200) -> TokenList:
        return self._get(TokenList, "/tokens", all=all, limit=limit)

    def revoke_token(self, token_id: str) -> DescribeToken:
        return self._send(DescribeToken, "DELETE", f"/tokens/{_quote_path(token_id)}")

    def audit(self, **query: Any) -> AuditList:
        """Audit entries, newest first (ListAuditQuery's filters; an admin's: everyone's)."""
        return self._get(AuditList, "/audit", **query)


def _expired(response: httpx.Response) -> bool:
    try:
        return bool(response.json().get("code") == TokenExpired.code)
    except ValueError:
        return False


def _query_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(getattr(v, "value", v)) for v in value)
    return getattr(value, "value", value)


def _quote_path(name: str) -> str:
    return quote(name, safe="/")


__all__ = ["Client", "LabrunError", "discover", "running_jupyter_servers"]
