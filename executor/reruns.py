"""A re-run's check before it runs anything: this worker's packages against its original's."""

from __future__ import annotations

from labrun import environment
from labrun.client import Client
from labrun.errors import LabrunError
from labrun.messages import JobSpec, RunError


def check_rerun(
    client: Client, spec: JobSpec, packages: list[str] | None
) -> tuple[list[str], RunError | None]:
    """A re-run's check, before it runs anything: this worker's ``packages`` against its
    original's record. Returns lines for the run's log, naming every difference, and the
    error that fails the run when it is strict and something differs (else None)."""
    if spec.rerun is None:
        return [], None
    original, strict = spec.rerun.of, spec.rerun.strict
    try:
        recorded = client.get_run(original).environment.get("packages")
    except LabrunError as err:
        problem = f"could not read run {original}'s record to compare packages: {err}"
        return [problem], (RunError(type="PackageMismatch", message=problem) if strict else None)
    if not recorded:
        return [f"run {original} recorded no packages; nothing to compare them with"], None
    differences = environment.package_differences(recorded, packages or [])
    if not differences:
        return [f"packages: the same {len(recorded)} as run {original} recorded"], None
    count = f"{len(differences)} package{'s' * (len(differences) > 1)}"
    lines = [f"packages: {count} differ from run {original}'s record:"]
    lines += [f"  {line}" for line in differences]
    if not strict:
        return lines, None
    error = RunError(
        type="PackageMismatch",
        message=f"strict re-run of run {original}: {count} differ from its record, so "
        f"nothing ran: {'; '.join(differences)}",
        differences=differences,
    )
    return lines, error
