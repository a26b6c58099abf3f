"""What comes right after `make demo`: every command the demo prints works when typed next,
as printed, in a new shell of the same user, with the demo's server gone; and its output is
whole in an 80-column terminal.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.demo import Demo, run_demo
from support.server import stop_group
from support.waiting import wait_for

from labrun.cli.output import number

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)

# A command the demo prints: indented, starting with labrun's or Jupyter's script.
COMMAND = re.compile(r"^  ((?:\S*/)?(?:labrun|jupyter) .*?)\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`make demo` in the repository, in an 80-column terminal."""
    done = run_demo(tmp_path_factory.mktemp("demo"), columns=80, cwd=ROOT)
    assert done.returncode == 0, done.output[-4000:]
    return done


@pytest.fixture(scope="module")
def printed(demo: Demo) -> list[str]:
    commands = COMMAND.findall(demo.output)
    assert len(commands) >= 4, demo.output[-3000:]
    return commands


def in_new_shell(demo: Demo, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` typed into a new shell of the demo's user, in the folder the demo ran in."""
    return subprocess.run(
        ["bash", "-c", command],
        env={**demo.env, "COLUMNS": "80"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sweep_runs(demo: Demo, printed: list[str]) -> list[dict]:
    (listing,) = [c for c in printed if re.search(r"labrun runs --sweep \d+$", c)]
    done = in_new_shell(demo, f"{listing} --json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["runs"]


def test_every_labrun_command_the_demo_prints_works_with_its_server_gone(
    demo: Demo, printed: list[str]
) -> None:
    labrun = [c for c in printed if " lab" not in c]
    subcommands = {c.split()[1] for c in labrun}
    assert {"runs", "show", "reports"} <= subcommands, labrun
    runs = sweep_runs(demo, printed)
    assert len(runs) == 6
    for command in labrun:
        done = in_new_shell(demo, command)
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        # It says, in one line, that it read the store the demo left
        assert done.stderr.count("No labrun server is running") == 1, done.stderr
        assert str(demo.data / "labrun.db") in done.stderr
        subcommand = command.split()[1]
        if subcommand in ("runs", "compare"):
            for run in runs:
                if subcommand == "runs" or str(run["id"]) in command.split():
                    assert number(run["metrics"]["val_accuracy"]) in done.stdout, done.stdout
        elif subcommand == "show":
            assert "val_accuracy" in done.stdout and "model.pt" in done.stdout, done.stdout
        elif subcommand == "reports":
            (html,) = re.findall(r"html\s+(\S+)", done.stdout)
            assert "The best run" in Path(html).read_text()
        assert "…" not in done.stdout, done.stdout


def test_the_demo_names_local_files_not_its_stopped_server(demo: Demo) -> None:
    assert "http://" not in demo.output.split("Sweep ", 1)[1]
    executed = re.findall(r"^run \d+ completed: (\S+)$", demo.output, re.MULTILINE)
    assert len(executed) == 7  # the sweep's six runs and its report's
    for path in executed:
        assert json.loads(Path(path).read_text())["cells"]
    (report,) = re.findall(r"^Report \d+ .*: (\S+\.html)$", demo.output, re.MULTILINE)
    assert "The best run" in Path(report).read_text()


def test_the_demo_final_table_is_whole_in_80_columns(demo: Demo, printed: list[str]) -> None:
    # Between the line that says where the report is and the best run
    table = demo.output.split("\nBest run:")[0].rsplit("\nReport ", 1)[1].split("\n", 1)[1]
    assert "…" not in table, table
    rows = {int(line.split()[0]): line for line in table.splitlines() if re.match(r"\s+\d", line)}
    for run in sweep_runs(demo, printed):
        assert number(run["metrics"]["val_accuracy"]) in rows[run["id"]], table
        assert number(run["metrics"]["val_loss"]) in rows[run["id"]], table
    assert max(len(line) for line in demo.output.splitlines() if "/" not in line) <= 80


@pytest.fixture
def lab(demo: Demo, printed: list[str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The `jupyter lab` command the demo prints, run as printed."""
    (command,) = [c for c in printed if re.search(r"jupyter lab\b", c)]
    with (tmp_path / "lab.log").open("wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            env=demo.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)


def test_jupyter_lab_as_printed_serves_the_demo_store(
    demo: Demo, printed: list[str], lab: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    runtime = Path(demo.env["JUPYTER_RUNTIME_DIR"])

    def serving() -> bool:
        assert lab.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
        for info in runtime.glob("jpserver-*.json"):
            server = json.loads(info.read_text())
            url = f"{server['url']}labrun/api/v1/version"
            headers = {"Authorization": f"token {server['token']}"}
            try:
                return httpx.get(url, headers=headers, timeout=2).is_success
            except httpx.HTTPError:
                return False
        return False

    wait_for(serving, timeout=120, what="jupyter lab")
    # The same commands now ask it, not the store
    listing = next(c for c in printed if " runs --sweep " in c)
    done = in_new_shell(demo, listing)
    assert done.returncode == 0, done.stderr
    assert "No labrun server is running" not in done.stderr
    assert len(re.findall(r"completed", done.stdout)) == 6, done.stdout


def test_what_jupyter_lab_writes_in_the_repository_is_ignored_by_git() -> None:
    # Opening the example notebooks, and a job's executed notebook from the sidebar, in a
    # `jupyter lab` started in the repository leaves git's status as it was
    written = [
        "notebooks/.ipynb_checkpoints/quickstart-checkpoint.ipynb",
        "docs/.ipynb_checkpoints/x-checkpoint.ipynb",
        "labrun-outputs/7-train_classifier.ipynb",
        "notebooks/labrun-outputs/8-sweep_report.ipynb",
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *written],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.split() == written, done.stderr
