"""The JupyterLab sidebar end to end: a real ``jupyter lab`` with labrun and its local pool
(two fake GPUs), seeded through the REST API, driven in Debian's Chromium.

Set ``LABRUN_SCREENSHOTS=docs/screenshots`` to refresh the README's screenshots.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.git import commit_all
from support.lab import (
    CHROMIUM,
    SIDEBAR_TAB,
    JupyterLab,
    open_sidebar,
    run_row,
    screenshot,
    show_panel,
)
from support.notebooks import make_notebook, write_notebook
from support.pool import wait_for_pool
from support.waiting import wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]

XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab with labrun's server extension and a local pool of two fake GPUs."""
    server = JupyterLab(tmp_path_factory.mktemp("lab"), env={"LABRUN_FAKE_GPUS": "2"})
    server.start()
    try:
        wait_for_pool(server, workers=2)  # type: ignore[arg-type]
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seeded(lab: JupyterLab) -> dict[str, Any]:
    """Runs of two projects with curves, a failed run, a hostile name and a report."""
    ids: dict[str, Any] = {}
    for name, lr, status, project in [
        ("unet-small", 0.1, "completed", "seg"),
        ("unet-large", 0.01, "completed", "seg"),
        ("resnet", 0.05, "failed", "cls"),
    ]:
        run = lab.api(
            "POST",
            "runs",
            json={"name": name, "project": project, "params": {"lr": lr, "epochs": 3}},
        )
        rows = [["loss", lr * 10 / (step + 1), step, None] for step in range(40)]
        lab.api("POST", f"runs/{run['id']}/metrics", json={"rows": rows})
        lab.api("POST", f"runs/{run['id']}/logs", json={"entries": [{"text": f"{name} ok\n"}]})
        lab.api("PATCH", f"runs/{run['id']}", json={"status": status})
        ids[name] = run["id"]
    ids["xss"] = lab.api("POST", "runs", json={"name": XSS_NAME, "params": {"note": XSS_NAME}})[
        "id"
    ]

    maker = lab.api("POST", "runs", json={"name": "report maker"})
    html = b"<html><body><h1 id='title'>Sweep report</h1><script>document.title='ran'</script>"
    lab.api("PUT", f"runs/{maker['id']}/artifacts/report.html", content=html)
    ids["report"] = lab.api(
        "POST",
        "reports",
        json={
            "name": "lr sweep",
            "notebook": "notebooks/sweep_report.ipynb",
            "params": {"sweep": 1},
            "run_id": maker["id"],
            "html_artifact": "report.html",
        },
    )["id"]
    return ids


@pytest.fixture(scope="module")
def page(browser: Any, lab: JupyterLab, seeded: dict[str, Any]) -> Iterator[Any]:
    """JupyterLab open in Chromium with the labrun sidebar shown."""
    page = browser.new_page()
    # Any alert() a hostile run name managed to run would land here.
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    open_sidebar(page, lab)
    page.wait_for_selector(".jp-labrun-row[data-run-id]")
    yield page
    page.close()


def names_shown(page: Any) -> list[str]:
    return page.locator(".jp-labrun-body .jp-labrun-col-name").all_inner_texts()


def test_the_labextension_is_installed_enabled_and_ok() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    assert re.search(r"labrun v\S+ enabled OK", output), output


def test_runs_are_listed_newest_first_filtered_and_sorted(
    page: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    # Newest first
    show_panel(page, "Runs")
    page.wait_for_function("document.querySelectorAll('.jp-labrun-body [data-run-id]').length >= 5")
    assert names_shown(page)[:2] == ["report maker", XSS_NAME]
    screenshot(page, "runs", tmp_path)

    # A filter on the name narrows the list on the server
    page.fill(".jp-labrun-search", "unet")
    page.wait_for_function("document.querySelector('.jp-labrun-count')?.textContent === '2 runs'")
    assert sorted(names_shown(page)) == ["unet-large", "unet-small"]

    # Sorting by name, descending first, then ascending
    page.click('.jp-labrun-header [role=columnheader]:has-text("Name")')
    page.wait_for_function(
        "document.querySelector('.jp-labrun-body .jp-labrun-col-name')?.textContent === 'unet-small'"
    )
    page.click('.jp-labrun-header [role=columnheader]:has-text("Name")')
    page.wait_for_function(
        "document.querySelector('.jp-labrun-body .jp-labrun-col-name')?.textContent === 'unet-large'"
    )

    # A status filter
    page.fill(".jp-labrun-search", "")
    page.click('.jp-labrun-chip[data-status="failed"]')
    page.wait_for_function("document.querySelector('.jp-labrun-count')?.textContent === '1 run'")
    assert names_shown(page) == ["resnet"]
    page.click('.jp-labrun-chip[data-status="failed"]')
    page.wait_for_function("document.querySelectorAll('.jp-labrun-body [data-run-id]').length >= 5")


# Whether an element lies inside another's box, and shows its text in full (not cut off
# with an ellipsis: what overflows a box makes its scrollWidth exceed its clientWidth).
FITS = """([el, box]) => {
  const a = el.getBoundingClientRect(), b = box.getBoundingClientRect();
  return {
    inside: a.left >= b.left && a.right <= b.right && a.top >= b.top && a.bottom <= b.bottom,
    box: [a.left, a.right, a.top, a.bottom, b.left, b.right, b.top, b.bottom].map(Math.round),
    whole: el.scrollWidth <= el.clientWidth,
    text: el.textContent,
  };
}"""


def fits(page: Any, selector: str, box: str = ".jp-labrun-sidebar") -> list[dict[str, Any]]:
    """For each element matching ``selector``: inside ``box``, its text whole."""
    container = page.locator(box).element_handle()
    return [
        page.evaluate(FITS, [element, container])
        for element in page.locator(selector).element_handles()
    ]


def test_at_the_default_width_the_tabs_name_status_and_metric_show_in_full(
    browser: Any, lab: JupyterLab, seeded: dict[str, Any]
) -> None:
    # Given the sidebar opened in a fresh workspace, at JupyterLab's default width
    page = browser.new_page()
    try:
        open_sidebar(page, lab, "lab/workspaces/default-width", widen=False)
        row = run_row(seeded["unet-small"])
        page.locator(f"{row} .jp-labrun-metric-value:text-is('0.025')").wait_for()
        width = page.locator(".jp-labrun-sidebar").bounding_box()["width"]
        assert width < 300, f"the sidebar was {width}px wide, not JupyterLab's default"

        # Then every tab's label, and the run's name, status and metric value, show whole
        tabs = fits(page, ".jp-labrun-sidebar .lm-TabBar-tab")
        assert [t["text"] for t in tabs] == ["Runs", "Queues", "GPUs", "Reports"]
        labels = fits(page, ".jp-labrun-sidebar .lm-TabBar-tabLabel")
        cells = [
            f"{row} .jp-labrun-col-name",
            f"{row} .jp-labrun-status",
            f"{row} .jp-labrun-col-metric",
            f"{row} .jp-labrun-metric-value",
        ]
        shown = [*tabs, *labels, *(fit for cell in cells for fit in fits(page, cell))]
        assert all(fit["inside"] and fit["whole"] for fit in shown), shown
        assert [fit["text"] for fit in shown[-4:]] == ["unet-small", "completed", "0.025", "0.025"]
    finally:
        page.close()


def test_a_run_tab_and_the_picked_metric_come_back_after_a_reload(
    browser: Any, lab: JupyterLab, seeded: dict[str, Any]
) -> None:
    # Given a run with a second metric, and the sidebar in a workspace of its own
    run = {"id": seeded["xss"]}
    lab.api("POST", f"runs/{run['id']}/metrics", json={"rows": [["acc", 0.5, 0, None]]})
    settings = f"{lab.url}lab/api/settings/labrun:plugin"
    page = browser.new_page()
    try:
        open_sidebar(page, lab, "lab/workspaces/restore", widen=False)
        picker = page.locator(".jp-labrun-metric-select")
        page.locator(f"{run_row(run['id'])}").wait_for()
        page.locator(".jp-labrun-metric-select option[value=acc]").wait_for(state="attached")

        # When the user picks the metric and opens the run, then reloads the page
        picker.select_option("acc")
        page.locator(f"{run_row(run['id'])} .jp-labrun-metric-value:text-is('0.5')").wait_for()
        page.click(f"{run_row(seeded['unet-large'])} .jp-labrun-col-name")
        page.locator(f"#labrun-run-{seeded['unet-large']} h2").wait_for()
        wait_for(
            lambda: '"acc"' in httpx.get(settings, headers=lab.headers).json().get("raw", ""),
            what="the picked metric to be saved in the settings",
        )
        workspace = f"{lab.url}lab/api/workspaces/restore"
        wait_for(
            lambda: (
                f"labrun-run-{seeded['unet-large']}"
                in httpx.get(workspace, headers=lab.headers).text
            ),
            what="the run's tab to be saved in the workspace",
        )
        page.reload()

        # Then the run's tab is back with the run, and the list shows the picked metric
        detail = page.locator(f"#labrun-run-{seeded['unet-large']}")
        detail.locator("h2:text-is('unet-large')").wait_for(timeout=60_000)
        detail.locator(".jp-labrun-chart[data-title=loss] path").wait_for()
        if not page.locator(".jp-labrun-sidebar").is_visible():
            page.click(SIDEBAR_TAB)
        page.locator(f"{run_row(run['id'])} .jp-labrun-metric-value:text-is('0.5')").wait_for()
        assert picker.input_value() == "acc"
    finally:
        page.close()
        # The other tests' pictures show the loss, the default
        httpx.put(settings, headers=lab.headers, json={"raw": "{}"}).raise_for_status()


def test_a_hostile_run_name_renders_as_text(page: Any, seeded: dict[str, Any]) -> None:
    row = page.locator(run_row(seeded["xss"]))
    assert row.locator(".jp-labrun-col-name").inner_text() == XSS_NAME
    assert page.locator(".jp-labrun-sidebar img").count() == 0
    assert page.dialogs == []


def test_a_run_opens_with_its_params_curves_and_log(
    page: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    page.click(f"{run_row(seeded['unet-small'])} .jp-labrun-col-name")
    detail = page.locator(f"#labrun-run-{seeded['unet-small']}")
    detail.locator(".jp-labrun-chart[data-title=loss] path").wait_for()
    assert "unet-small" in detail.locator("h2").inner_text()
    assert "lr" in detail.locator(".jp-labrun-kv").first.inner_text()
    assert "unet-small ok" in detail.locator(".jp-labrun-log").inner_text()
    assert detail.locator(".jp-labrun-transitions .jp-labrun-status-completed").count() == 1
    screenshot(page, "run-detail", tmp_path)


def test_two_runs_compare_side_by_side(page: Any, seeded: dict[str, Any], tmp_path: Path) -> None:
    show_panel(page, "Runs")
    for name in ("unet-small", "unet-large"):
        page.check(f"{run_row(seeded[name])} input[type=checkbox]")
    page.click(".jp-labrun-compare")
    view = page.locator(".jp-labrun-compare-view")
    view.locator(".jp-labrun-chart[data-title=loss] path").nth(1).wait_for()
    # lr differs and is highlighted; epochs is the same and is not
    assert view.locator('tr.jp-labrun-differs[data-key="lr"]').count() == 1
    assert view.locator('tr[data-key="epochs"]:not(.jp-labrun-differs)').count() == 1
    screenshot(page, "compare", tmp_path)
    for name in ("unet-small", "unet-large"):
        page.uncheck(f"{run_row(seeded[name])} input[type=checkbox]")


def submit(lab: JupyterLab, name: str, seconds: float) -> int:
    content = make_notebook(
        "import time\ntime.sleep(seconds)\nprint('slept', seconds)", parameters="seconds = 0"
    )
    job = lab.api(
        "POST",
        "jobs",
        json={
            "notebook": f"{name}.ipynb",
            "content": content,
            "parameters": {"seconds": seconds},
            "name": name,
        },
    )
    return int(job["id"])


def test_a_job_goes_from_queued_to_running_to_completed_live(
    page: Any, lab: JupyterLab, tmp_path: Path
) -> None:
    # Given both workers busy with long jobs, a new job waits in the queue
    blockers = [submit(lab, f"blocker-{i}", 120) for i in range(2)]
    waiting = submit(lab, "waiting", 2)
    show_panel(page, "Queues")
    queue = page.locator('.jp-labrun-queue[data-queue="default"]')
    for blocker in blockers:
        queue.locator(f'tr[data-run-id="{blocker}"] .jp-labrun-status-running').wait_for(
            timeout=60_000
        )
    waiting_row = queue.locator(f'tr[data-run-id="{waiting}"]')
    waiting_row.locator(".jp-labrun-status-queued").wait_for()
    assert waiting_row.locator("td").first.inner_text() == "1"
    # The one server of the store dispatches: this one
    dispatcher = page.locator(".jp-labrun-dispatcher")
    dispatcher.filter(has_text="Dispatching: this server").wait_for()
    screenshot(page, "queues", tmp_path)

    # When the user cancels their blockers from the panel
    for blocker in blockers:
        queue.locator(f'tr[data-run-id="{blocker}"] .jp-labrun-cancel').click()
        queue.locator(f'tr[data-run-id="{blocker}"]').wait_for(state="detached", timeout=30_000)

    # Then the waiting job runs and completes, and the Runs panel follows without a reload
    waiting_row.locator(".jp-labrun-status-running").wait_for(timeout=60_000)
    show_panel(page, "Runs")
    page.locator(f"{run_row(waiting)} .jp-labrun-status-completed").wait_for(timeout=60_000)
    for blocker in blockers:
        assert lab.api("GET", f"runs/{blocker}")["status"] == "cancelled"


def test_the_notebook_in_focus_is_submitted_from_the_form_and_its_output_opened(
    page: Any, lab: JupyterLab
) -> None:
    # Given a parameterized notebook of a git repository, open in JupyterLab
    root = lab.dir / "root"
    (root / "project").mkdir()
    write_notebook(
        root / "project" / "greet.ipynb",
        "print('hello', who, '!' if loud else '')",
        parameters="who = 'nobody'\nloud = False",
    )
    commit = commit_all(root / "project")
    page.goto(f"{lab.url}lab/tree/project/greet.ipynb?token={lab.token}")
    # Its cells shown: the notebook's content is loaded, which is what the form sends
    page.locator(".jp-NotebookPanel .jp-Cell:has-text('nobody')").wait_for(timeout=60_000)
    if not page.locator(".jp-labrun-sidebar").is_visible():
        page.click(SIDEBAR_TAB)

    # When it is submitted from the Queues panel with a parameter
    show_panel(page, "Queues")
    page.click(".jp-labrun-submit-open")
    form = page.locator(".jp-labrun-form")
    assert "greet.ipynb" in form.inner_text()
    form.locator(".jp-labrun-params-input").fill("who = 'world'\nloud = True")
    form.locator("button[type=submit]").click()
    form.wait_for(state="detached")

    # Then it runs, and its executed notebook opens in JupyterLab with the parameter applied
    job = lab.api("GET", "runs", params={"q": "greet"})["runs"][0]
    show_panel(page, "Runs")
    page.locator(f"{run_row(job['id'])} .jp-labrun-status-completed").wait_for(timeout=90_000)
    page.click(f"{run_row(job['id'])} .jp-labrun-col-name")
    detail = page.locator(f"#labrun-run-{job['id']}")
    detail.locator(".jp-labrun-open-notebook").click()
    executed = page.locator(".jp-NotebookPanel:visible").last
    executed.locator("text=hello world !").wait_for(timeout=30_000)
    assert (root / "labrun-outputs" / f"run-{job['id']}-greet.ipynb").exists()
    # Its run records the notebook's git state, which the server read beside the notebook
    assert lab.api("GET", f"runs/{job['id']}")["environment"]["git"]["commit"] == commit
    assert commit in detail.inner_text()

    # And Re-run queues the same job again and opens the new run
    page.click(f"{run_row(job['id'])} .jp-labrun-col-name")  # back to the run's tab
    page.click(f"#labrun-run-{job['id']} .jp-labrun-rerun")
    page.locator(f"#labrun-run-{job['id'] + 1} h2").wait_for()
    again = lab.api("GET", f"runs/{job['id'] + 1}")
    assert again["name"] == f"greet (rerun of {job['id']})"
    assert again["params"] == {"who": "world", "loud": True}
    # Leave the pool idle for the next test
    wait_for(
        lambda: lab.api("GET", f"runs/{again['id']}")["status"] == "completed",
        what="the re-run to complete",
    )


def test_gpu_cards_show_each_fake_gpu(page: Any, tmp_path: Path) -> None:
    show_panel(page, "GPUs")
    page.locator(".jp-labrun-gpu").nth(1).wait_for(timeout=60_000)
    cards = page.locator(".jp-labrun-gpu")
    assert cards.count() == 2
    # One fake GPU per worker of the local pool, each pinned to its own device
    assert sorted(re.findall(r"GPU (\d)", " ".join(cards.all_inner_texts()))) == ["0", "1"]
    for card in cards.all():
        assert "Fake NVML GPU" in card.inner_text()
        assert card.locator(".jp-labrun-bar").count() == 2  # utilization and memory
    # Nothing runs now: both are called out as idle
    assert page.locator(".jp-labrun-gpu-idle").count() == 2
    assert "2 GPUs on 2 workers" in page.locator(".jp-labrun-summary").inner_text()
    assert "2 idle" in page.locator(".jp-labrun-summary").inner_text()
    screenshot(page, "gpus", tmp_path)


def test_a_pool_without_gpus_shows_each_workers_cpu_and_memory(
    browser: Any, tmp_path: Path
) -> None:
    # Given a local pool of two workers on a machine without GPUs (the fake's none)
    lab = JupyterLab(tmp_path / "lab", env={"LABRUN_FAKE_GPUS": "0"})
    lab.start()
    page = browser.new_page()
    try:
        wait_for_pool(lab, workers=2)  # type: ignore[arg-type]
        open_sidebar(page, lab, widen=False)
        show_panel(page, "GPUs")

        # Then the panel says there are no GPUs, and shows each worker's CPU and memory
        summary = page.locator(".jp-labrun-summary")
        summary.locator("text=No GPUs in this pool: 2 workers, CPU only.").wait_for(timeout=60_000)
        workers = page.locator(".jp-labrun-worker")
        assert workers.count() == 2
        for worker in workers.all():
            bars = worker.locator(".jp-labrun-host .jp-labrun-bar-text")
            # "3.5 GiB / 23.5 GiB" once its first sample is in
            bars.filter(has_text=re.compile(r"B / \d")).wait_for(timeout=60_000)
            assert re.fullmatch(r"\d+%", bars.nth(0).inner_text()), bars.nth(0).inner_text()
        assert page.locator(".jp-labrun-gpu").count() == 0
    finally:
        page.close()
        lab.stop()


def test_a_report_opens_rendered_without_running_its_script(
    page: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    show_panel(page, "Reports")
    page.click(f'[data-report-id="{seeded["report"]}"] .jp-labrun-report-open')
    frame = page.frame_locator(f"#labrun-report-{seeded['report']} iframe")
    assert frame.locator("#title").inner_text() == "Sweep report"
    # The script would have renamed the document: the policy and the sandbox stopped it.
    title = frame.locator("title")
    assert title.count() == 0 or title.inner_text() != "ran"
    screenshot(page, "reports", tmp_path)


def test_the_panels_follow_the_dark_theme(page: Any, tmp_path: Path) -> None:
    show_panel(page, "Runs")
    sidebar = page.locator(".jp-labrun-sidebar")
    light = sidebar.evaluate("e => getComputedStyle(e).backgroundColor")
    page.click('.lm-MenuBar-itemLabel:text-is("Settings")')
    page.click('.lm-Menu-itemLabel:text-is("Theme")')
    page.click('.lm-Menu-itemLabel:text-is("JupyterLab Dark")')
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    dark = sidebar.evaluate("e => getComputedStyle(e).backgroundColor")
    assert dark != light
    # Dark means dark: every colour channel of the background is low
    assert all(int(c) < 100 for c in re.findall(r"\d+", dark)[:3]), dark
    screenshot(page, "runs-dark", tmp_path)


def test_without_the_server_extension_the_panel_says_how_to_fix_it(
    browser: Any, tmp_path: Path
) -> None:
    lab = JupyterLab(tmp_path / "lab", server_extension=False, pool=False)
    lab.start()
    page = browser.new_page()
    try:
        page.goto(f"{lab.url}lab?token={lab.token}")
        page.click(SIDEBAR_TAB, timeout=90_000)
        problem = page.locator(".jp-labrun-problem").first
        problem.wait_for()
        text = problem.inner_text()
        assert "server extension is not running" in text
        assert "jupyter server extension list" in text
    finally:
        page.close()
        lab.stop()


# Last: its new run would be the newest in the lists the tests above read.
def test_the_project_filter_offers_a_project_as_its_first_run_arrives(
    page: Any, lab: JupyterLab
) -> None:
    show_panel(page, "Runs")
    options = ".jp-labrun-project option"
    page.wait_for_function(f"document.querySelectorAll('{options}').length > 1")
    assert "brand-new" not in page.locator(options).all_inner_texts()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/projects" in r.url else None)
    # A run that changes in a known project: the list follows, the projects are not read
    # again (counting a million runs' projects is work for the database).
    run = lab.api("POST", "runs", json={"name": "renamed later", "project": "seg"})
    lab.api("PATCH", f"runs/{run['id']}", json={"name": "renamed now"})
    page.wait_for_function(
        "[...document.querySelectorAll('.jp-labrun-body .jp-labrun-col-name')]"
        ".some(e => e.textContent === 'renamed now')"
    )
    assert asked == []
    # A run in a project the filter lacks: read once more, and offered
    lab.api("POST", "runs", json={"name": "first of its project", "project": "brand-new"})
    page.wait_for_function(
        f"[...document.querySelectorAll('{options}')].some(o => o.value === 'brand-new')"
    )
    assert len(asked) == 1
