"""The pool: Dask cluster helpers, the labrun worker plugin and the notebook runner.

Runs on Dask workers (and, for starting a local cluster, in the server). Talks to the
server only over its REST API, through :class:`labrun.Client`.
"""
