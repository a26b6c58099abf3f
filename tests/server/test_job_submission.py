"""What the server records of a notebook job it is sent: the git state of a sidebar's
notebook (read here, under the server's root dir); a re-run's options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.api import Api
from support.git import commit_all
from support.notebooks import make_notebook, write_notebook


def job(notebook: str, content: dict[str, Any]) -> dict[str, Any]:
    """A job as the sidebar's submit form sends it: the path under the root dir, no state."""
    return {"notebook": notebook, "content": content, "parameters": {}, "gpus": 0}


async def test_a_sidebar_submission_records_the_git_state_the_server_reads(
    api: Api, jp_root_dir: Path
) -> None:
    # Given a notebook in a git repository under the server's root dir, importing a module
    # beside it whose change is not committed yet
    project = jp_root_dir / "project"
    project.mkdir()
    (project / "helpers.py").write_text("SCALE = 1\n")
    path = write_notebook(project / "train.ipynb", "import helpers\nprint(helpers.SCALE)")
    commit = commit_all(project)
    (project / "helpers.py").write_text("SCALE = 2\n")

    # When the sidebar submits it
    run = await api("POST", "jobs", body=job("project/train.ipynb", json.loads(path.read_text())))

    # Then its run records the notebook, the commit, the diff and the module
    env = run["environment"]
    assert env["notebook"] == str(path.resolve())
    assert (env["git"]["commit"], env["git"]["branch"], env["git"]["dirty"]) == (
        commit,
        "main",
        True,
    )
    assert "+SCALE = 2" in env["git"]["diff"] and "tracked" not in env["git"]
    assert env["local_modules"]["helpers"]["path"] == "helpers.py"
    assert (await api("GET", f"runs/{run['id']}"))["environment"] == env


async def test_a_notebook_outside_the_root_dir_is_not_read_and_the_run_says_why(
    api: Api, tmp_path: Path
) -> None:
    outside = write_notebook(tmp_path / "elsewhere.ipynb", "print(1)")
    content = json.loads(outside.read_text())
    for notebook in (str(outside), "../elsewhere.ipynb", "missing.ipynb"):
        run = await api("POST", "jobs", body=job(notebook, content))
        assert set(run["environment"]) == {"capture_error"}, notebook
        assert "not a file under the server's root dir" in run["environment"]["capture_error"]

    # What a CLI read where the notebook is, it sends, and the server keeps it as sent
    state = {"notebook": str(outside), "git": None, "local_modules": {}}
    run = await api("POST", "jobs", body={**job(str(outside), content), "environment": state})
    assert run["environment"] == state
    refused = await api(
        "POST",
        "jobs",
        body={**job("x.ipynb", content), "environment": {"packages": []}},
        status=400,
    )
    assert "environment.packages" in refused["message"]  # the worker records those


async def test_rerun_takes_an_optional_strict(api: Api) -> None:
    content = json.loads(json.dumps(make_notebook("print(1)")))
    run = await api("POST", "jobs", body=job("x.ipynb", content))
    # An empty body is still a plain re-run, as before the option existed
    again = await api("POST", f"runs/{run['id']}/rerun", status=201)
    assert again["environment"]["rerun_of"] == run["id"]
    # A run that recorded no packages (it never ran) cannot be re-run strictly
    refused = await api("POST", f"runs/{run['id']}/rerun", body={"strict": True}, status=400)
    assert "recorded no packages" in refused["message"]
    misspelt = await api("POST", f"runs/{run['id']}/rerun", body={"strcit": True}, status=400)
    assert "strcit" in misspelt["message"]
