"""%%mlrun end to end: a real kernel, a real labrun server, a real Dask pool."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from distributed import Client as DaskClient
from support.kernel import Kernel
from support.pool import labrun_cli
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.errors import InvalidRequest
from labrun.executor.execution import KILL_GRACE


def _client(server: LabrunServer) -> Client:
    return Client(server.url, server.token)


def _last_run(server: LabrunServer, kind: str = "cell") -> dict:
    with _client(server) as client:
        runs = client.list_runs(kind=kind, limit=1).runs
        assert runs, "no run was recorded"
        return client.get_run(runs[0].id).model_dump()


def _finished_run(server: LabrunServer, run_id: int) -> dict:
    with _client(server) as client:
        return wait_for(
            lambda: (r := client.get_run(run_id)).status.finished and r.model_dump(),
            what=f"run {run_id} to finish",
        )


def test_a_cell_runs_remotely_with_the_notebooks_values(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    kernel.ok(
        "import os\nimport numpy as np\n"
        "def scale(a, k):\n    return a * k\n"
        "data = np.arange(6).reshape(2, 3)\nfactor = 3"
    )
    done = kernel.ok(
        "%%mlrun --name scaled\n"
        "import os\n"
        "scaled = scale(data, factor)\n"
        "total = int(scaled.sum())\n"
        "print('remote pid', os.getpid())"
    )
    assert "remote pid" in done.text()
    remote_pid = int(done.text().split()[-1])
    assert remote_pid != kernel.value("os.getpid()")
    assert kernel.value("total") == 45
    assert kernel.value("scaled.tolist()") == [[0, 3, 6], [9, 12, 15]]
    run_id = kernel.value("_mlrun.run_id")
    run = _finished_run(pool_server, run_id)
    assert run["status"] == "completed"
    assert run["name"] == "scaled"
    assert run["kind"] == "cell"
    assert run["source"].startswith("import os")
    assert set(run["environment"]["inputs"]) == {"data", "factor", "scale"}
    assert "git" in run["environment"] and "packages" in run["environment"]
    with _client(pool_server) as client:
        assert "remote pid" in "".join(e.text for e in client.logs(run_id).entries)
        assert "inputs.pkl" in [a.name for a in client.artifacts(run_id).artifacts]


def test_output_streams_while_the_cell_runs(kernel: Kernel, tmp_path: Path) -> None:
    # The cell goes on only once the notebook has shown its first line: were output held
    # back until the cell ended, it would wait for that line forever (and say so).
    shown = tmp_path / "shown"
    kernel.ok(f"shown = {str(shown)!r}")

    def on_output(output) -> None:
        if output.kind == "stream" and "first" in output.content["text"]:
            shown.touch()

    done = kernel.ok(
        "%%mlrun\nimport os, time\nprint('first', flush=True)\n"
        "for _ in range(600):\n    if os.path.exists(shown):\n        break\n    time.sleep(0.1)\n"
        "else:\n    raise TimeoutError('the first line was not shown while the cell ran')\n"
        "print('second')",
        on_output=on_output,
    )
    assert done.text().index("first") < done.text().index("second")


def test_rich_output_and_the_last_expression_come_back(kernel: Kernel) -> None:
    done = kernel.ok(
        "%%mlrun\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\n6 * 7"
    )
    assert "<b>bold</b>" in done.data("text/html")
    assert "42" in done.data("text/plain")


def test_a_figure_and_a_progress_bar_show_as_in_a_notebook(kernel: Kernel) -> None:
    pytest.importorskip("matplotlib")
    done = kernel.ok(
        "%%mlrun\nimport time\nimport matplotlib.pyplot as plt\nfrom tqdm import tqdm\n"
        "for _ in tqdm(range(3)):\n    time.sleep(0.2)\n"
        "plt.plot([1, 4, 9])"
    )
    assert done.data("image/png"), "the figure did not come back"
    bar = done.text("stderr")
    # tqdm redraws its line with carriage returns; they must arrive intact to redraw in place.
    assert "\r" in bar and "3/3" in bar


def test_a_notebook_progress_bar_shows_as_text(kernel: Kernel) -> None:
    # tqdm.notebook's widget would live on the worker, where nothing can update it.
    done = kernel.ok(
        "%%mlrun\nfrom tqdm.notebook import tqdm, trange\nfor _ in tqdm(range(3)):\n    pass"
    )
    bar = done.text("stderr")
    assert "\r" in bar and "3/3" in bar


def test_an_exception_shows_the_remote_traceback_and_stops_the_notebook(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    done = kernel.execute(
        "%%mlrun\ndef check(v):\n    raise ValueError(f'bad value {v}')\ncheck(7)"
    )
    assert not done.ok  # "Run All" stops at this cell
    assert "ValueError" in done.error and "bad value 7" in done.error
    assert "check(7)" in done.error  # the worker's frames, not the magic's
    run = _finished_run(pool_server, kernel.value("_mlrun.run_id"))
    assert run["status"] == "failed"
    assert run["error"]["ename"] == "ValueError"
    assert any("bad value 7" in line for line in run["error"]["traceback"])
    # nbclient and papermill read the error's name from the reply: the cell's, not ours
    assert done.reply["ename"] == "ValueError"


def test_a_remote_exception_is_caught_by_its_own_type(kernel: Kernel) -> None:
    done = kernel.ok(
        "try:\n"
        "    get_ipython().run_cell_magic('mlrun', '--name raises', 'raise KeyError(3)')\n"
        "except KeyError as err:\n"
        "    print('caught', type(err).__name__)"
    )
    assert "caught KeyError" in done.text()


def test_interrupting_the_kernel_cancels_the_remote_run(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    started = threading.Event()

    def interrupt_once_started(output) -> None:
        if output.kind == "stream" and "sleeping" in output.content["text"]:
            started.set()
            kernel.interrupt()

    # The cell would sleep ten minutes: the reply (within execute's 120 s) comes only because
    # the interrupt stopped it.
    done = kernel.execute(
        "%%mlrun\nimport time\nprint('sleeping', flush=True)\ntime.sleep(600)",
        on_output=interrupt_once_started,
    )
    assert started.is_set()
    assert not done.ok and "KeyboardInterrupt" in done.error
    run = _finished_run(pool_server, kernel.value("_mlrun.run_id"))
    assert run["status"] == "cancelled"
    # The worker is free again.
    assert kernel.ok("%%mlrun\nafter = 1").ok
    assert kernel.value("after") == 1


def test_no_wait_returns_at_once_and_fetch_brings_the_values(
    kernel: Kernel, tmp_path: Path
) -> None:
    # The cell ends only once the test lets it, after --no-wait gave the notebook back: a
    # magic that waited for the cell would never return.
    go = tmp_path / "go"
    kernel.ok(f"go = {str(go)!r}")
    done = kernel.ok(
        "%%mlrun --no-wait\nimport os, time\n"
        "while not os.path.exists(go):\n    time.sleep(0.1)\nlater = 'ready'",
        timeout=60,
    )
    assert done.data("application/vnd.jupyter.widget-view+json"), "no live widget shown"
    assert kernel.value("'later' in globals()") is False
    go.touch()
    kernel.ok("%mlrun_fetch")
    assert kernel.value("later") == "ready"
    # .result() on the handle works too, and gives the values.
    kernel.ok("%%mlrun --no-wait\nsecond = 2")
    assert kernel.value("_mlrun.result(timeout=60)") == {"second": 2}


def test_a_session_keeps_its_namespace_across_cells(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    kernel.ok("%%mlrun --session warm\nimport os\nseen = [os.getpid()]\nbig = list(range(10))")
    kernel.ok("%%mlrun --session warm\nimport os\nseen.append(os.getpid())")
    kernel.ok("%%mlrun --session warm --out count\ncount = len(seen) + len(big)")
    assert kernel.value("count") == 12
    pids = kernel.value("seen")
    assert len(set(pids)) == 1  # one worker process held the namespace
    session = _last_run(pool_server, kind="session")
    assert session["status"] == "running"
    with _client(pool_server) as client:
        # Records land just after their cells, off the cells' path.
        cells = wait_for(
            lambda: (
                (found := client.list_runs(parent_id=session["id"]).runs)
                and len(found) == 3
                and found
            ),
            what="the session's three cell runs",
        )
        assert all(c.kind.value == "cell" for c in cells)
    kernel.ok("%mlrun_release warm")
    assert _finished_run(pool_server, session["id"])["status"] == "completed"


BAD_INPUT = {
    "%%mlrun --gpus -1\nx = 1": "--gpus -1",
    "%%mlrun --bogus\nx = 1": "unrecognized arguments: --bogus",
    "%%mlrun --queue nowhere\nx = 1": "no such queue (queues: default)",
    "%%mlrun --timeout 0\nx = 1": "--timeout 0",
    "%%mlrun --out 1x\nx = 1": "--out '1x'",
    "%%mlrun --session 'a b'\nx = 1": "--session",
    "%mlparams lr=fast()": "not a literal value",
    "%mlparams lr": "is not NAME=VALUE",
    "%mldataset only-a-name": "the following arguments are required: path",
    "%mldataset data /no/such/place": "no file or folder",
    "%mlrun_fetch 999999": "there is no run 999999",
    "%mlrun_fetch soon": "give a run number",
    "%mlrun_release nothing": "no session named 'nothing'",
}


@pytest.mark.parametrize(("code", "message"), BAD_INPUT.items(), ids=list(BAD_INPUT))
def test_bad_options_and_values_get_clear_errors(kernel: Kernel, code: str, message: str) -> None:
    done = kernel.execute(code)
    assert not done.ok, code
    # IPython prints a UsageError on stderr; other errors are the cell's error output.
    said = done.error + done.text("stderr")
    assert message in said, (code, said)
    assert "Traceback" not in said, code  # a message, not a stack


def test_a_value_that_cannot_be_pickled_is_named_before_anything_runs(kernel: Kernel) -> None:
    kernel.ok("import threading\nlock = threading.Lock()")
    done = kernel.execute("%%mlrun\nwith lock:\n    y = 1")
    assert not done.ok
    assert "lock (lock: cannot pickle '_thread.lock' object)" in done.error
    assert "Create them inside the cell" in done.error


def test_labrun_rerun_runs_a_cell_again_with_its_stored_inputs(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    kernel.ok("import numpy as np\ndef shift(a, k):\n    return a + k\nbase = np.arange(4)")
    kernel.ok("%%mlrun --name shifted\nmoved = shift(base, 10)\nprint('moved', moved.sum())")
    original = _finished_run(pool_server, kernel.value("_mlrun.run_id"))
    assert original["environment"]["outputs"] == ["moved"]
    # The notebook moves on; the rerun must use the inputs as they were.
    kernel.ok("base = np.zeros(4)")
    result = labrun_cli(pool_server, "rerun", str(original["id"]), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moved 46" in result.stdout  # the live log of the rerun
    with _client(pool_server) as client:
        rerun = client.list_runs(kind="cell", limit=1).runs[0]
        detail = client.get_run(rerun.id)
        assert detail.status.value == "completed"
        assert detail.environment["rerun_of"] == original["id"]
        assert detail.source == original["source"]
        stored = {a.name: a.sha256 for a in client.artifacts(rerun.id).artifacts}
        before = {a.name: a.sha256 for a in client.artifacts(original["id"]).artifacts}
        assert stored["inputs.pkl"] == before["inputs.pkl"]
        assert "outputs.pkl" in stored
    kernel.ok(f"%mlrun_fetch {rerun.id}")
    assert kernel.value("moved.tolist()") == [10, 11, 12, 13]


def test_cells_that_cannot_be_rerun_exactly_say_why(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    kernel.ok("%%mlrun --session keep\nkept = 1")
    in_session = kernel.value("_mlrun.run_id")
    kernel.ok("%mlrun_release keep")
    kernel.ok("%config LabrunMagics.max_input_artifact = 16")
    try:
        kernel.ok("big = list(range(1000))")
        kernel.ok("%%mlrun\nn = len(big)")
        too_big = kernel.value("_mlrun.run_id")
        _finished_run(pool_server, too_big)
    finally:
        kernel.ok("%config LabrunMagics.max_input_artifact = 67108864")
    with _client(pool_server) as client:
        with pytest.raises(InvalidRequest, match="whose namespace is not stored"):
            client.rerun(in_session)
        with pytest.raises(InvalidRequest, match="inputs were not stored"):
            client.rerun(too_big)
    # A session's own run, and not a rerun: its values were never stored.
    session = _finished_run(pool_server, in_session)["parent_id"]
    done = kernel.execute(f"%mlrun_fetch {session}")
    assert not done.ok and "has no stored values" in done.error + done.text("stderr")


def test_mlruns_lists_recent_runs(kernel: Kernel, pool_server: LabrunServer) -> None:
    kernel.ok("%%mlrun --name listed\nx = 1")
    _finished_run(pool_server, kernel.value("_mlrun.run_id"))
    done = kernel.ok("%mlruns --limit 5")
    table = done.data("text/html")[0]
    assert "<table" in table and "completed" in table


def test_a_torch_model_trained_remotely_comes_back_usable(kernel: Kernel) -> None:
    pytest.importorskip("torch")
    kernel.ok(
        "import torch\ntorch.manual_seed(0)\n"
        "xs = torch.linspace(-1, 1, 64).unsqueeze(1)\nys = 3 * xs + 1"
    )
    kernel.ok(
        "%%mlrun\nimport torch\nimport labrun\n"
        "model = torch.nn.Linear(1, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.3)\n"
        "for step in range(200):\n"
        "    opt.zero_grad()\n"
        "    loss = torch.nn.functional.mse_loss(model(xs), ys)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    labrun.log({'loss': loss.item()}, step=step)\n"
        "final_loss = loss.item()"
    )
    assert kernel.value("final_loss") < 1e-3
    assert kernel.value("round(model(torch.tensor([[2.0]])).item(), 2)") == 7.0
    assert kernel.value("next(model.parameters()).device.type") == "cpu"
    assert kernel.value("type(model).__name__") == "Linear"


def test_metrics_logged_in_a_cell_land_on_its_run(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    kernel.ok("%%mlrun\nimport labrun\nfor i in range(5):\n    labrun.log({'acc': i / 4})")
    run = _finished_run(pool_server, kernel.value("_mlrun.run_id"))
    assert run["metrics"] == {"acc": 1.0}


@pytest.mark.skipif(os.cpu_count() == 1, reason="needs two workers")
def test_the_pool_runs_cells_of_two_kernels(pool_server: LabrunServer, tmp_path) -> None:
    other = Kernel(tmp_path, pool_server.env)
    try:
        other.ok("%load_ext labrun")
        other.ok("%%mlrun\nanswer = 41 + 1")
        assert other.value("answer") == 42
    finally:
        other.close()


def test_cancelling_a_cell_run_from_the_server_stops_it(
    kernel: Kernel, pool_server: LabrunServer
) -> None:
    # A training loop: Python code between short native calls, where an interrupt lands.
    kernel.ok(
        "%%mlrun --no-wait\nimport time\nprint('busy', flush=True)\n"
        "for step in range(600):\n    time.sleep(0.1)"
    )
    run_id = kernel.value("_mlrun.run_id")
    with _client(pool_server) as client:
        wait_for(lambda: client.get_run(run_id).status.value == "running", what="the cell to run")
        client.cancel_run(run_id)  # what the sidebar's Cancel does
    done = kernel.execute("_mlrun.result(timeout=30)")
    assert not done.ok and "cancelled" in done.error
    assert _finished_run(pool_server, run_id)["status"] == "cancelled"


def test_a_cell_stuck_in_native_code_is_stopped_once_and_not_run_again(
    kernel: Kernel, pool_server: LabrunServer, tmp_path: Path
) -> None:
    # time.sleep is one long native call: the interrupt cannot land until it returns, so
    # the worker process is restarted. Dask must not then run the cell on another worker.
    marks = tmp_path / "started"
    kernel.ok(f"marks = {str(marks)!r}")
    kernel.ok(
        "%%mlrun --no-wait\nimport time\nwith open(marks, 'a') as f:\n    f.write('x')\n"
        "print('sleeping', flush=True)\ntime.sleep(120)"
    )
    run_id = kernel.value("_mlrun.run_id")
    with _client(pool_server) as client, DaskClient(client.pool().scheduler, timeout=60) as dask:
        before = set(dask.run(os.getpid).values())
        # Cancelled the moment it starts: before the worker knows the run's id (it looks the
        # run up only when the cell first reports), so the worker finds it by its key.
        wait_for(lambda: marks.exists(), what="the cell to start")
        client.cancel_run(run_id)
        done = kernel.execute("_mlrun.result(timeout=60)")
        assert not done.ok and "cancelled" in done.error
        # The stuck worker's process is replaced (after KILL_GRACE), and then nothing runs:
        # a re-run of the cell on another worker would sleep on, and write a second mark.
        # (A worker going away as it is asked answers nothing, rather than failing the ask.)
        wait_for(
            lambda: (
                len(now := set(dask.run(os.getpid, on_error="ignore").values())) == 2
                and now != before
            ),
            KILL_GRACE + 60,
            "the stuck worker's process to be replaced",
        )
        wait_for(
            lambda: not any(dask.processing().values()), 60, "the pool to have nothing running"
        )
    assert marks.read_text() == "x"
    assert _finished_run(pool_server, run_id)["status"] == "cancelled"


def test_a_first_cell_waits_for_a_pool_that_is_still_starting(tmp_path: Path) -> None:
    # Given a server that has just started, its local pool not ready yet, and a notebook's
    # kernel that was already open (as when `jupyter lab` and a notebook open together)
    server = LabrunServer(tmp_path / "server", pool=True)
    (tmp_path / "notebook").mkdir()
    kernel = Kernel(tmp_path / "notebook", server.env)
    try:
        kernel.ok("%load_ext labrun")
        server.start()
        with _client(server) as client:
            assert client.pool().state == "starting"

        # When its first %%mlrun cell runs
        done = kernel.ok("%%mlrun --name first\nanswer = 6 * 7")

        # Then it says it waits, and runs once the pool is ready
        assert "waiting for the pool to start" in done.text("stdout")
        assert "labrun" not in done.text("stderr")  # JupyterLab paints stderr red
        assert kernel.value("answer") == 42
    finally:
        kernel.close()
        server.stop()


def test_labrun_says_what_it_does_on_stdout_and_keeps_stderr_for_trouble(
    pool_server: LabrunServer, tmp_path: Path
) -> None:
    # A kernel of its own: the word about GPUs comes once a kernel
    kernel = Kernel(tmp_path, pool_server.env)
    try:
        kernel.ok("%load_ext labrun")
        said = {
            "%%mlrun\nx = 1": "the pool has no GPU workers",
            "%%mlrun --session chat\ny = 2": "session 'chat' started",
            "%mlrun_release chat": "session 'chat' released",
            "%%mlrun --no-wait\nz = 3": "",
            "%mlrun_fetch": "brought back z",
        }
        for code, message in said.items():
            done = kernel.ok(code)
            assert message in done.text("stdout"), (code, done.outputs)
            # JupyterLab paints stderr red: nothing went wrong here
            assert done.text("stderr") == "", (code, done.text("stderr"))
        # A real warning still goes to stderr
        done = kernel.ok("%%mlrun\nimport threading\nlock = threading.Lock()\nkept = 1")
        assert "did not come back" in done.text("stderr")
        assert kernel.value("kept") == 1
    finally:
        kernel.close()
