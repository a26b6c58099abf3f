"""Artifacts: files of a run, stored content-addressed under an fsspec URL.

The bytes live under ``artifact_root`` (a directory by default, or any fsspec URL) at a
path derived from their SHA-256, so the same content uploaded twice is stored once; the
database keeps each run's name for it, its size, digest and content type. Where a file
lies stays on the server: the API names an artifact by its run and name only.
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import unicodedata
from email.utils import encode_rfc2231

import fsspec
from sqlalchemy import select

from labrun.errors import InvalidRequest, NotFound
from labrun.models import ArtifactList, DescribeArtifact

from .database import Database
from .runs import RunStore
from .tables import Artifact, utcnow

# Types a browser should not guess at; notebooks are JSON to everything but Jupyter.
mimetypes.add_type("application/x-ipynb+json", ".ipynb")
mimetypes.add_type("application/yaml", ".yaml")
mimetypes.add_type("text/markdown", ".md")
for _suffix in (".pt", ".pth", ".ckpt", ".safetensors", ".npy", ".npz", ".pkl"):
    mimetypes.add_type("application/octet-stream", _suffix)


def check_name(name: str) -> str:
    """An artifact name is a relative POSIX path that stays inside the run.

    Any Unicode letter will do; control characters (NUL, CR, LF...) will not: the name
    goes into the download's headers.
    """
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise InvalidRequest(
            f"artifact name {name!r} has a control character (U+{ord(control):04X}); "
            "use a name without one"
        )
    normalized = posixpath.normpath(name) if name else ""
    if (
        not name
        or len(name) > 1024
        or name.startswith("/")
        or "\\" in name
        or normalized.startswith("..")
        or normalized in (".", "")
        or normalized != name
    ):
        raise InvalidRequest(
            f"artifact name {name!r} must be a relative path like 'model.pt' or 'plots/loss.png'"
        )
    return name


def content_disposition(name: str) -> str:
    """A download's ``Content-Disposition``: an attachment under the name's last part.

    As RFC 6266 has it: ``filename*`` carries any Unicode name (UTF-8, percent-encoded),
    and ``filename`` an ASCII stand-in for clients that know no better.
    """
    filename = name.rsplit("/", 1)[-1]
    plain = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    plain = "".join("_" if c in '"\\%' else c for c in plain).strip() or "download"
    if plain == filename:
        return f'attachment; filename="{plain}"'
    return f'attachment; filename="{plain}"; filename*={encode_rfc2231(filename, "utf-8")}'


def content_type_of(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def describe(a: Artifact) -> DescribeArtifact:
    return DescribeArtifact.model_validate(a, from_attributes=True)


class ArtifactStore:
    def __init__(self, db: Database, root: str) -> None:
        self.db = db
        self.root = root.rstrip("/")

    def _uri(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def put(
        self,
        run_id: int,
        name: str,
        data: bytes,
        *,
        content_type: str | None,
        kind: str = "file",
        attempt: int | None = None,
    ) -> DescribeArtifact:
        """Store ``data`` as the run's artifact ``name``; a worker names the ``attempt`` it
        comes from, and one of an attempt that was lost is refused (409)."""
        check_name(name)
        digest = hashlib.sha256(data).hexdigest()
        uri = self._uri(digest)
        fs, path = fsspec.core.url_to_fs(uri)
        with self.db.session() as session:
            RunStore.load(session, run_id)
        if not fs.exists(path):
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            # Write beside, then move: a reader never sees half a file under its digest.
            partial = f"{path}.partial"
            with fs.open(partial, "wb") as f:
                f.write(data)
            fs.mv(partial, path)
        with self.db.session() as session:
            # Where the record is written: the attempt may have been lost meanwhile.
            RunStore.check_attempt(RunStore.load(session, run_id), attempt, f"the file {name!r}")
            artifact = session.scalar(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)
            )
            if artifact is None:
                artifact = Artifact(run_id=run_id, name=name)
                session.add(artifact)
            artifact.uri = uri
            artifact.size = len(data)
            artifact.sha256 = digest
            artifact.content_type = content_type or content_type_of(name)
            artifact.kind = kind
            artifact.created_at = utcnow()
            session.flush()
            return describe(artifact)

    def list_artifacts(self, run_id: int) -> ArtifactList:
        with self.db.session() as session:
            RunStore.load(session, run_id)
            rows = session.scalars(
                select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.name)
            ).all()
            return ArtifactList(artifacts=[describe(a) for a in rows])

    def get(self, run_id: int, name: str) -> DescribeArtifact:
        return self.locate(run_id, name)[0]

    def locate(self, run_id: int, name: str) -> tuple[DescribeArtifact, str]:
        """An artifact and where its bytes are stored (for the server alone to read)."""
        with self.db.session() as session:
            RunStore.load(session, run_id)
            artifact = session.scalar(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)
            )
            if artifact is None:
                raise NotFound(
                    f"run {run_id} has no artifact named {name!r}; "
                    f"`labrun show {run_id}` lists its artifacts"
                )
            return describe(artifact), artifact.uri

    @staticmethod
    def read_chunks(uri: str, chunk_size: int = 1 << 20):
        with fsspec.open(uri, "rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk
