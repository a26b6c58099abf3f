"""Content hashes of datasets: a file or a folder, fast when nothing changed.

Each file's SHA-256 is remembered with its size and modification time (nanoseconds) in a
small SQLite cache, so hashing a folder again reads only the files that changed. A folder's
hash covers every file's relative path and digest, so a rename is a new version too.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from labrun import settings
from labrun.errors import InvalidRequest

CHUNK = 4 * 2**20
# The manifest a version records lists at most this many files (the hash covers all).
MANIFEST_LIMIT = 10_000


@dataclass
class ContentHash:
    content_hash: str
    size: int
    file_count: int
    files_read: int
    manifest: dict[str, str] = field(default_factory=dict)


class HashCache:
    """``(path, size, mtime_ns) -> sha256`` for files hashed before."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or settings.data_dir() / "hash-cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS files "
                "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
            )

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
                (path, size, mtime_ns),
            ).fetchone()
        return row[0] if row else None

    def put_many(self, rows: list[tuple[str, int, int, str]]) -> None:
        if rows:
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def human_size(n: int) -> str:
    """Bytes for people: ``3.4 MB``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_path(path: str | os.PathLike[str], cache: HashCache | None = None) -> ContentHash:
    """The content hash of a file or folder (hidden files and folders skipped)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InvalidRequest(f"no file or folder at {str(path)!r}")
    own_cache = cache is None
    cache = cache or HashCache()
    try:
        if root.is_file():
            files = [(root, root.name)]
        else:
            files = sorted(
                (p, p.relative_to(root).as_posix())
                for p in root.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        digests: list[tuple[str, str]] = []
        fresh: list[tuple[str, int, int, str]] = []
        size = 0
        for file, relative in files:
            stat = file.stat()
            key = str(file.resolve())
            digest = cache.get(key, stat.st_size, stat.st_mtime_ns)
            if digest is None:
                digest = _file_digest(file)
                fresh.append((key, stat.st_size, stat.st_mtime_ns, digest))
            digests.append((relative, digest))
            size += stat.st_size
        cache.put_many(fresh)
    finally:
        if own_cache:
            cache.close()
    if root.is_file():
        content = digests[0][1]
    else:
        h = hashlib.sha256()
        for relative, digest in digests:
            h.update(f"{relative}\0{digest}\n".encode())
        content = h.hexdigest()
    return ContentHash(
        content_hash=content,
        size=size,
        file_count=len(digests),
        files_read=len(fresh),
        manifest=dict(digests[:MANIFEST_LIMIT]),
    )
