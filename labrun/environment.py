"""What a run records about where its code came from and what it ran on.

The notebook (its real path, not the kernel launcher's), git state with the uncommitted diff,
the local modules the notebook imported, installed distributions, Python, OS, torch and CUDA
versions, and the GPUs with their driver. Each part is best effort: a missing git or NVML
leaves its part out rather than failing the run.

A ``%%mlrun`` cell's kernel records it all at once (:class:`Capturer`). A notebook job records
it in two halves: where it is submitted, the code (:func:`code_state`: the notebook, git, the
local modules it imports); on the worker that runs it, the machine (:func:`machine`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from labrun.params import code_sources

# A diff or module source larger than this is cut (the digest still identifies it).
MAX_TEXT = 512 * 1024
# Local modules followed from a notebook's imports, at most: a guard against a huge tree.
MAX_MODULES = 200

# What describes the machine and process a run ran on, not its code: a re-run runs
# elsewhere, so it records these anew (a notebook job's worker records them at its claim).
MACHINE_KEYS = frozenset(
    {"python", "platform", "hostname", "argv", "cwd", "pid", "packages", "versions", "gpus"}
)


def basic() -> dict[str, Any]:
    """Where the process runs: cheap enough for every run."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }


def notebook_path(namespace: dict[str, Any] | None = None) -> str | None:
    """The notebook this kernel serves, as Jupyter Server or VS Code tell the kernel."""
    namespace = namespace or {}
    for candidate in (
        namespace.get("__session__"),  # ipykernel >= 6.? sets it from the session
        namespace.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),  # jupyter_server >= 2 names the notebook
    ):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return str(Path(candidate).expanduser().resolve())
    return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n[... cut by labrun]\n"


def git_state(folder: Path) -> dict[str, Any] | None:
    """Commit, branch, whether it is dirty, and the diff against HEAD (tracked files)."""
    root = _git(["rev-parse", "--show-toplevel"], folder)
    if root is None:
        return None
    top = Path(root.strip())
    commit = (_git(["rev-parse", "HEAD"], top) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], top) or "").strip() or None
    diff = _git(["diff", "HEAD", "--no-color"], top) if commit else None
    untracked = (_git(["ls-files", "--others", "--exclude-standard"], top) or "").split()
    tracked = (_git(["ls-files"], top) or "").split()
    return {
        "root": str(top),
        "commit": commit,
        "branch": branch,
        "dirty": bool(diff) or bool(untracked),
        "diff": _cut(diff or ""),
        "diff_sha256": hashlib.sha256((diff or "").encode()).hexdigest(),
        "untracked": untracked[:200],
        "tracked": tracked,
    }


@lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {str(Path(r).resolve()) for r in roots}
    return tuple(sorted(roots))


class _ModuleFiles:
    """Which imported modules are local files, and their digests, re-read only on change."""

    def __init__(self) -> None:
        self._local: dict[str, Path | None] = {}
        self._digests: dict[Path, tuple[int, str, str]] = {}

    def local(self, base: Path) -> dict[str, Path]:
        installed = _installed_roots()
        found = {}
        for name, module in list(sys.modules.items()):
            if name not in self._local:
                file = getattr(module, "__file__", None)
                path = None
                # Some packages (torch) give modules made-up relative file names.
                if (
                    file
                    and file.endswith(".py")
                    and os.path.isabs(file)
                    and not file.startswith(installed)
                    and os.path.isfile(file)
                ):
                    path = Path(file).resolve()
                    if str(path).startswith(installed):
                        path = None
                self._local[name] = path
            path = self._local[name]
            if path is not None and path.is_relative_to(base):
                found[name] = path
        return found

    def digest(self, path: Path) -> tuple[str, str]:
        mtime = path.stat().st_mtime_ns
        cached = self._digests.get(path)
        if cached is None or cached[0] != mtime:
            text = path.read_text(errors="replace")
            cached = (mtime, hashlib.sha256(text.encode()).hexdigest(), text)
            self._digests[path] = cached
        return cached[1], cached[2]


def local_modules(
    folder: Path, git: dict[str, Any] | None, files: _ModuleFiles | None = None
) -> dict[str, Any]:
    """Modules imported from files near the notebook (not installed): their path and digest.

    Ones that git does not track carry their source, since no diff would show them.
    """
    files = files or _ModuleFiles()
    base = Path(git["root"]) if git else folder
    return _module_entries(files.local(base), base, git, files)


def _module_entries(
    modules: Mapping[str, Path], base: Path, git: dict[str, Any] | None, files: _ModuleFiles
) -> dict[str, Any]:
    """Each module's path (relative to ``base``) and digest; its source if git lacks it."""
    tracked = set(git.get("tracked") or ()) if git else set()
    found: dict[str, Any] = {}
    for name, path in modules.items():
        try:
            digest, text = files.digest(path)
        except OSError:
            continue  # deleted since it was imported
        relative = path.relative_to(base)
        entry: dict[str, Any] = {"path": str(relative), "sha256": digest}
        if relative.as_posix() not in tracked:
            entry["source"] = _cut(text)
        found[name] = entry
    return found


def _imports(source: str) -> list[tuple[int, str, list[str]]]:
    """(level, module, imported names) of every import in ``source``; none if it does not
    parse (a notebook cell may hold anything)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [a.name for a in node.names]))
    return found


def _module_file(folder: Path, dotted: str) -> Path | None:
    *parents, last = dotted.split(".")
    base = folder.joinpath(*parents)
    for candidate in (base / f"{last}.py", base / last / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(sources: Iterable[str], folder: Path) -> dict[str, Path]:
    """The local modules that code run in ``folder`` imports, and the ones they import:
    each module's name and file, for modules that are files under ``folder``.

    Read from the source, not by running it: what a notebook job will import where it runs
    beside its notebook (its working directory comes first on ``sys.path``).
    """
    found: dict[str, Path] = {}
    # (source, the package it belongs to: where its relative imports start)
    todo = [(source, "") for source in sources]
    while todo and len(found) < MAX_MODULES:
        source, package = todo.pop()
        for level, module, names in _imports(source):
            if level:
                parts = package.split(".") if package else []
                if not parts or level - 1 >= len(parts):
                    continue  # a relative import outside any package: it fails there too
                module = ".".join([*parts[: len(parts) - level + 1], *([module] if module else [])])
            wanted = ([module] if module else []) + [f"{module}.{n}" for n in names if n != "*"]
            for dotted in wanted:
                parts = dotted.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in found:
                        continue
                    file = _module_file(folder, name)
                    if file is None:
                        break  # not a local module (installed, or a name it defines)
                    found[name] = file
                    inside = name if file.name == "__init__.py" else name.rpartition(".")[0]
                    try:
                        todo.append((file.read_text(errors="replace"), inside))
                    except OSError:
                        pass
    return found


def code_state(notebook: Path, content: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a notebook job records where it is submitted: the notebook's path and host, the
    git state of its folder (commit, branch, the uncommitted diff), and the local modules
    its code cells import (digests; the source of those git does not track).

    Once per submission (a sweep's runs share it): git takes tens of milliseconds.
    """
    notebook = notebook.expanduser().resolve()
    folder = notebook.parent
    found: dict[str, Any] = {"notebook": str(notebook), "submit_host": socket.gethostname()}
    try:
        git = git_state(folder)
        found["git"] = {k: v for k, v in git.items() if k != "tracked"} if git else None
        modules = imported_files(code_sources(content or {}), folder)
        base = Path(git["root"]) if git else folder
        found["local_modules"] = _module_entries(modules, base, git, _ModuleFiles())
    except Exception as err:  # noqa: BLE001 - a partial record beats a refused job
        found["capture_error"] = f"{type(err).__name__}: {err}"
    return found


@lru_cache(maxsize=1)
def _distributions(stamp: int) -> tuple[str, ...]:
    names = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            names[name.lower()] = f"{name}=={dist.version}"
    return tuple(sorted(names.values(), key=str.lower))


def packages() -> list[str]:
    """Installed distributions as ``name==version`` (re-read at most once a minute)."""
    return list(_distributions(int(time.time() // 60)))


@lru_cache(maxsize=32)
def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
    }
    torch_version = _version_of("torch")
    if torch_version:
        found["torch"] = torch_version
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None:
        found["cuda"] = torch.version.cuda
        found["cuda_available"] = bool(torch.cuda.is_available())
        if found["cuda_available"]:
            found["cudnn"] = torch.backends.cudnn.version()
    elif torch_version:
        found["cuda"] = _torch_cuda()
    return found


@lru_cache(maxsize=1)
def _torch_cuda() -> str | None:
    """The CUDA version torch was built for, read from its ``version.py`` without importing
    torch (seconds, and a GPU context) on a process that does not use it: a pool worker."""
    try:
        file = importlib.metadata.distribution("torch").locate_file("torch/version.py")
        tree = ast.parse(Path(str(file)).read_text())
    except (importlib.metadata.PackageNotFoundError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "cuda" and isinstance(value, ast.Constant):
            return value.value if isinstance(value.value, str) else None
    return None


def gpus() -> list[dict[str, Any]]:
    """The GPUs NVML sees, with the driver version; empty without a driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "uuid": pynvml.nvmlDeviceGetUUID(handle),
                    "memory_total": int(memory.total),
                    "driver": driver,
                }
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def machine(gpus: list[dict[str, Any]], installed: list[str]) -> dict[str, Any]:
    """What a pool worker records for a job it runs: the machine and its Python, the
    installed distributions (``installed``, as :func:`packages` lists them), the versions,
    and ``gpus``, the devices the job holds (in :func:`gpus`' shape)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": installed,
        "versions": versions(),
        "gpus": gpus,
    }


def code_only(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A run's record without what describes the machine it ran on: what a re-run keeps."""
    return {k: v for k, v in recorded.items() if k not in MACHINE_KEYS}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # as pip compares distribution names


def package_differences(recorded: Iterable[str], here: Iterable[str]) -> list[str]:
    """Every difference between two ``name==version`` lists, one line each, by name."""

    def by_name(listing: Iterable[str]) -> dict[str, tuple[str, str]]:
        pairs = (item.partition("==") for item in listing)
        return {_canonical(name): (name, version) for name, _, version in pairs}

    old, new = by_name(recorded), by_name(here)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            lines.append(f"{old[key][0]} {old[key][1]} recorded, not installed here")
        elif key not in old:
            lines.append(f"{new[key][0]} {new[key][1]} installed here, not recorded")
        elif old[key][1] != new[key][1]:
            lines.append(f"{old[key][0]} {old[key][1]} recorded, {new[key][1]} here")
    return lines


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class Capturer:
    """:func:`capture` for a long-lived process (a kernel): repeated captures cost little.

    Git is asked again only when HEAD, the index, the notebook or an imported local module
    changed; module digests are re-read only for files whose modification time changed; the
    GPUs and the installed distributions are read once a minute.
    """

    def __init__(self) -> None:
        self._files = _ModuleFiles()
        self._git: tuple[tuple[Any, ...], dict[str, Any] | None] | None = None
        self._gpus: tuple[float, list[dict[str, Any]]] | None = None

    def _git_state(self, folder: Path, notebook: str | None) -> dict[str, Any] | None:
        git_dir = None
        for parent in (folder, *folder.parents):
            if (parent / ".git").exists():
                git_dir = parent / ".git"
                break
        if git_dir is None:
            return None
        local = self._files.local(git_dir.parent)
        key = (
            str(folder),
            _mtime(git_dir / "HEAD"),
            _mtime(git_dir / "index"),
            _mtime(Path(notebook)) if notebook else 0,
            tuple(sorted((str(p), _mtime(p)) for p in local.values())),
        )
        if self._git is None or self._git[0] != key:
            self._git = (key, git_state(folder))
        return self._git[1]

    def capture(self, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
        found = basic()
        notebook = notebook_path(namespace)
        folder = Path(notebook).parent if notebook else Path.cwd()
        git = self._git_state(folder, notebook)
        if self._gpus is None or time.monotonic() - self._gpus[0] > 60:
            self._gpus = (time.monotonic(), gpus())
        found.update(
            notebook=notebook,
            git={k: v for k, v in git.items() if k != "tracked"} if git else None,
            local_modules=local_modules(folder, git, self._files),
            packages=packages(),
            versions=versions(),
            gpus=self._gpus[1],
        )
        return found


def capture(namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a run records about its code and machine (tens of ms; off the hot path)."""
    return Capturer().capture(namespace)
