"""A real git repository for the tests that record a notebook's git state."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(folder: Path, *args: str) -> str:
    """Run git in ``folder`` as a throwaway identity; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-c", "user.name=labrun", "-c", "user.email=labrun@example.com", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit_all(folder: Path, message: str = "initial") -> str:
    """``git init`` (branch main) and commit every file in ``folder``; the commit's sha."""
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-parse", "HEAD")
