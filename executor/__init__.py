"""The pool: Dask cluster helpers, the labrun worker plugin and the notebook runner.

Runs on Dask workers (and, for starting a local cluster, in the server). Talks to the
server only over its REST API, through :class:`labrun.Client`.
"""


def worker_id(address: str) -> str:
    """A worker's id in the store: its address without the scheme (no slashes in URLs)."""
    return address.split("://", 1)[-1]
