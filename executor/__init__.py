"""The pool: Dask cluster helpers, the labrun worker plugins, the cell and notebook runners.

Runs on Dask workers (and, for starting a local cluster, in the server). Talks to the
server only over its REST API, through :class:`labrun.Client`.
"""

import atexit
import functools
import gc


def worker_id(address: str) -> str:
    """A worker's id in the store: its address without the scheme (no slashes in URLs)."""
    return address.split("://", 1)[-1]


@functools.cache
def quick_exit() -> None:
    """Make this process's exit skip the interpreter's final garbage collection.

    A server or a worker holds a large heap; collecting it at exit frees nothing the
    process would not give back anyway, and on a starved CPU takes seconds of a stop that
    must be done in ten. Objects still get their ``atexit`` and ``weakref.finalize`` calls.
    """
    atexit.register(gc.freeze)
