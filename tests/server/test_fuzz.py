"""schemathesis fuzzes every operation of the served OpenAPI document against a real
`labrun server`: no response is a 5xx, and every response is what the document says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from support.server import LabrunServer

# Checks, bounds and the few documented exceptions.
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Fixed, so a run is repeatable; LABRUN_FUZZ_SEED=<n> explores further.
SEED = os.environ.get("LABRUN_FUZZ_SEED", "20261130")


def test_fuzzing_every_operation_finds_no_server_error_or_schema_violation(
    labrun_server: LabrunServer, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{labrun_server.url}labrun/api/v1/openapi.json",
        "--header",
        f"Authorization: token {labrun_server.token}",
        "--checks",
        "all",
        # Pydantic reads numbers as JSON Schema does (336.0 is an integer), and so takes
        # "3" and true for a number too, and a Unix time for a date: lenient, not wrong.
        "--exclude-checks",
        "negative_data_rejection",
        "--seed",
        SEED,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=240, check=False
    )
    report = result.stdout[-15000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    # Every operation of the document ran, but the WebSocket's and the document's own
    # (both disabled in schemathesis.toml).
    document = httpx.get(
        f"{labrun_server.url}labrun/api/v1/openapi.json",
        headers={"Authorization": f"token {labrun_server.token}"},
    ).json()
    methods = {"get", "put", "post", "delete", "patch"}
    operations = sum(
        len(methods & set(item))
        for path, item in document["paths"].items()
        if not path.endswith(("/events", "/openapi.json"))
    )
    assert f"Tested: {operations}" in result.stdout, report
