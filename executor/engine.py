"""A papermill engine that runs a notebook on a kernel that is already started and ready.

Papermill's own engine starts a kernel per notebook, waits for it (``wait_for_ready``, which
also spends a fixed 0.2 s draining IOPub) and shuts it down at the end. With a warm kernel
from :class:`~labrun.executor.kernels.KernelPool` only the connection is left: this engine
connects, confirms that IOPub receives (so no early output is lost), and leaves the
kernel's shutdown to the pool. Registered with papermill as ``labrun-warm``.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.client import KernelClient
from jupyter_core.utils import run_sync
from nbclient.util import run_hook
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.utils import merge_kwargs, remove_args

from .kernels import connect_ready

ENGINE_NAME = "labrun-warm"


class WarmKernelClient(PapermillNotebookClient):
    """Papermill's client, connecting to the given kernel without the generic start wait."""

    async def async_start_new_kernel_client(self) -> KernelClient:
        assert self.km is not None
        client = self.km.client()
        assert isinstance(client, AsyncKernelClient)  # the pool's managers are async
        self.kc = client
        client.start_channels()
        try:
            await connect_ready(client, self.startup_timeout)
        except Exception:
            self.kc.stop_channels()
            raise
        self.kc.allow_stdin = False
        await run_hook(self.on_notebook_start, notebook=self.nb)
        return self.kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)


class WarmKernelEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: float = 60,
        execution_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs.get("km") is None:
            raise ValueError(f"the {ENGINE_NAME} engine needs a started kernel manager (km=)")
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        return WarmKernelClient(nb_man, **final_kwargs).execute()


papermill_engines.register(ENGINE_NAME, WarmKernelEngine)
