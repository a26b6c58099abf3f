"""`labrun demo`, the README's first command after the install, then what the README says to
do next: `jupyter lab` on the same store, where the sidebar shows the sweep, its runs and its
report, and the quickstart notebook sends its `%%mlrun` cells to the pool.

Set ``LABRUN_SCREENSHOTS=docs/screenshots`` to refresh the README's tour pictures.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.demo import Demo, run_demo
from support.lab import (
    CHROMIUM,
    SIDEBAR_TAB,
    JupyterLab,
    open_sidebar,
    run_row,
    screenshot,
    show_panel,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(400)
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """One `labrun demo` on a machine with no labrun server running."""
    return run_demo(tmp_path_factory.mktemp("demo"), columns=200)


def test_the_demo_sweeps_reports_and_says_where_everything_is(demo: Demo) -> None:
    # The six runs completed, the best is named, and the report is where it says
    assert demo.returncode == 0, demo.output[-4000:]
    assert "6/6" in demo.output and "Best run:" in demo.output
    (report,) = (demo.workdir / "reports").glob("report-*.html")
    assert str(report) in demo.output.replace("\n", "")
    html = report.read_text()
    assert "Summary" in html and "The best run" in html
    assert html.count("data:image/png;base64") >= 2
    assert "jupyter lab" in demo.output


@pytest.fixture(scope="module")
def lab(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """`jupyter lab` afterwards, on the demo's store, as the demo tells its user to do."""
    if demo.returncode != 0:
        pytest.skip("the demo failed")
    server = JupyterLab(tmp_path_factory.mktemp("lab"), env={"LABRUN_DATA_DIR": str(demo.data)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(browser: Any, lab: JupyterLab) -> Iterator[Any]:
    page = browser.new_page()
    open_sidebar(page, lab)
    yield page
    page.close()


@pytest.fixture(scope="module")
def sweep(lab: JupyterLab) -> dict[str, Any]:
    (parent,) = lab.api("GET", "runs", params={"kind": "sweep"})["runs"]
    return lab.api("GET", f"sweeps/{parent['id']}")


def checkout_commit() -> str:
    """The commit of this checkout: the example notebooks' git state."""
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_demo_sweep_records_its_code_and_packages(
    lab: JupyterLab, sweep: dict[str, Any]
) -> None:
    # The example notebooks' git state is this checkout's (the demo copies them to run)
    commit = checkout_commit()
    report_run = sweep["report_run"]
    for run_id in [sweep["sweep"]["id"], *(r["id"] for r in sweep["runs"]), report_run]:
        env = lab.api("GET", f"runs/{run_id}")["environment"]
        assert env["git"]["commit"] == commit, run_id
        assert env["notebook"].startswith(str(ROOT / "notebooks")), run_id
    for run_id in [*(r["id"] for r in sweep["runs"]), report_run]:
        env = lab.api("GET", f"runs/{run_id}")["environment"]
        assert any(p.startswith("torch==") for p in env["packages"]), run_id
        assert env["versions"]["torch"] and env["hostname"], run_id


@needs_chromium
def test_jupyter_lab_shows_the_demo_sweep_and_its_report(
    page: Any, lab: JupyterLab, sweep: dict[str, Any], tmp_path: Path
) -> None:
    # The Runs panel lists the sweep, its six runs and the report's run
    show_panel(page, "Runs")
    page.fill(".jp-labrun-search", "classifier")
    page.wait_for_function("document.querySelector('.jp-labrun-count')?.textContent === '8 runs'")
    for run in sweep["runs"]:
        page.locator(f"{run_row(run['id'])} .jp-labrun-status-completed").wait_for()
    screenshot(page, "demo-runs", tmp_path)

    # Its six runs compare: the grid's parameters differ, the fixed ones do not, curves overlay
    for run in sweep["runs"]:
        page.check(f"{run_row(run['id'])} input[type=checkbox]")
    page.click(".jp-labrun-compare")
    view = page.locator(".jp-labrun-compare-view")
    view.locator(".jp-labrun-chart[data-title=loss] path").nth(5).wait_for()
    differs = view.locator("tr.jp-labrun-differs").evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert {"hidden", "lr"} <= set(differs) and "epochs" not in differs
    screenshot(page, "sweep", tmp_path)
    for run in sweep["runs"]:
        page.uncheck(f"{run_row(run['id'])} input[type=checkbox]")

    # The Reports panel lists its report, which opens rendered with its table and curves;
    # the sidebar folds away to give the report the width
    show_panel(page, "Reports")
    (report,) = lab.api("GET", "reports")["reports"]
    page.click(f'[data-report-id="{report["id"]}"] .jp-labrun-report-open')
    frame = page.frame_locator(f"#labrun-report-{report['id']} iframe")
    frame.locator("text=The best run").first.wait_for()
    assert frame.locator("table").count() >= 1
    assert frame.locator("img").count() >= 2
    page.click(SIDEBAR_TAB)
    screenshot(page, "sweep-report", tmp_path)
    frame.locator("img").first.scroll_into_view_if_needed()
    screenshot(page, "sweep-report-curves", tmp_path)
    page.click(SIDEBAR_TAB)


@needs_chromium
def test_a_notebook_job_of_the_sweep_opens_with_its_curves_log_and_notebook(
    page: Any, sweep: dict[str, Any], tmp_path: Path
) -> None:
    show_panel(page, "Runs")
    job = sweep["runs"][0]
    page.click(f"{run_row(job['id'])} .jp-labrun-col-name")
    detail = page.locator(f"#labrun-run-{job['id']}")
    detail.locator(".jp-labrun-chart[data-title=loss] path").wait_for()
    # The cells' progress streamed to its log; its executed notebook is an artifact
    detail.locator(".jp-labrun-log:has-text('cell')").wait_for()
    assert "train_classifier.ipynb" in detail.inner_text()
    assert detail.locator(".jp-labrun-open-notebook").count() == 1
    # Its environment shows as a %%mlrun cell's: the commit, the packages, torch
    text = detail.inner_text()
    assert checkout_commit() in text and "no git state recorded" not in text
    assert re.search(r"\b[1-9][0-9]* packages", text), text
    assert re.search(r"torch\s+2\.", text), text
    screenshot(page, "notebook-job", tmp_path)


@needs_chromium
def test_the_quickstart_runs_in_jupyter_lab_with_its_cells_on_the_pool(
    page: Any, lab: JupyterLab, tmp_path: Path
) -> None:
    # Given the quickstart notebook open in JupyterLab: its kernel finds the server itself
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", lab.dir / "root" / "quickstart.ipynb")
    page.goto(f"{lab.url}lab/tree/quickstart.ipynb?token={lab.token}")
    notebook = page.locator(".jp-NotebookPanel:visible")
    notebook.wait_for(timeout=60_000)
    page.locator(".jp-StatusBar-Widget:has-text('| Idle')").wait_for(timeout=60_000)

    # When the user runs every cell
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-itemLabel:text-is("Run All Cells")')

    # Then the %%mlrun cell's output streamed back and its values came back into the notebook
    outputs = notebook.locator(".jp-OutputArea-output")
    outputs.locator("text=back in the notebook").wait_for(timeout=180_000)
    outputs.locator("text=quickstart-use").wait_for(timeout=120_000)  # %mlruns, the last cell
    assert outputs.locator("text=trained on the pool: final loss").count() == 1
    cells = {r["name"]: r for r in lab.api("GET", "runs", params={"kind": "cell"})["runs"]}
    assert cells["quickstart-train"]["status"] == "completed"
    assert cells["quickstart-train"]["params"] == {"lr": 0.5, "epochs": 200, "seed": 0}

    mlrun_cell = notebook.locator(".jp-Cell:has-text('%%mlrun --name quickstart-train')")
    mlrun_cell.scroll_into_view_if_needed()
    page.evaluate("el => el.scrollIntoView({block: 'start'})", mlrun_cell.element_handle())
    screenshot(page, "mlrun", tmp_path)
