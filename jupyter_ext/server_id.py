"""Which server wrote something to a store several servers share: its host and process.

The audit log's ``server`` column, and whatever else needs to say which of a team's servers
did a thing (the scheduler of record's lease, events), use :data:`SERVER_ID`.
"""

from __future__ import annotations

import os
import socket


def server_id() -> str:
    """``host:pid`` of this process: unique among the servers running at one time."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Made once: a server's id does not change while it runs (a forked child makes its own).
SERVER_ID = server_id()
