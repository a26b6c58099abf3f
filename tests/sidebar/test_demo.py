"""`labrun demo`, the README's first command after the install: the whole main job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(400)


def test_the_demo_sweeps_reports_and_says_where_everything_is(tmp_path: Path) -> None:
    # Given a machine with no labrun server running (the session's own runtime and data dirs)
    env = {**os.environ, "LABRUN_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("LABRUN_SERVER_URL", None)

    # When the demo runs
    done = subprocess.run(
        [sys.executable, "-m", "labrun.cli", "demo", "--epochs", "1", "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )

    # Then the six runs completed, the best is named, and the report is where it says
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "6/6" in output and "Best run:" in output
    (report,) = (tmp_path / "reports").glob("report-*.html")
    assert str(report) in output.replace("\n", "")
    html = report.read_text()
    assert "Summary" in html and "The best run" in html
    assert html.count("data:image/png;base64") >= 2
    assert "jupyter lab" in output
