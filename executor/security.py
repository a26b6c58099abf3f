"""The pool's TLS: the one :class:`~distributed.security.Security` every Dask connection of
labrun's takes.

Its one source is Dask's own configuration, ``distributed.comm.require-encryption`` and
``distributed.comm.tls.*``, set in a Dask YAML file or as ``DASK_DISTRIBUTED__COMM__...``
environment variables: what every other process of a Dask pool reads (``dask scheduler``,
dask-jobqueue's and dask-kubernetes' workers). The server's client and its local pool,
``labrun worker`` and a kernel's client all call :func:`pool_security`, so none of them can
differ from the others, and each says which setting it lacks instead of failing in the
middle of a TLS handshake.
"""

from __future__ import annotations

from typing import Literal

import dask.config
from distributed.security import Security

from labrun.errors import ServerUnavailable

Role = Literal["client", "scheduler", "worker"]

REQUIRE_ENCRYPTION = "distributed.comm.require-encryption"
CA_FILE = "distributed.comm.tls.ca-file"


def pool_security(*roles: Role, address: str | None = None) -> Security:
    """Dask's configured ``Security``, checked for what ``roles`` need.

    ``address`` is the scheduler this process connects to; None for a pool this process
    starts, which uses TLS when the config requires encryption (:func:`local_protocol`).
    A ServerUnavailable says what is missing: a tls:// address, or the CA and a role's
    certificate (its key may be in the same file, as Dask allows).
    """
    security = Security()
    if address is not None and security.require_encryption and not is_tls(address):
        raise ServerUnavailable(
            f"Dask's config requires encryption ({REQUIRE_ENCRYPTION}), but the pool's "
            f"scheduler is {address!r}: give its tls:// address (tls://"
            f"{address.split('://', 1)[-1]}), with the scheduler started under the same "
            "TLS settings"
        )
    if security.require_encryption or (address is not None and is_tls(address)):
        needed = [CA_FILE, *(f"distributed.comm.tls.{role}.cert" for role in roles)]
        missing = [key for key in needed if not dask.config.get(key, None)]
        if missing:
            where = f"the pool's scheduler is {address!r}" if address else REQUIRE_ENCRYPTION
            raise ServerUnavailable(
                f"the pool uses TLS ({where}), but Dask's config here lacks "
                f"{', '.join(missing)}: set {' and '.join(map(environment_name, missing))} "
                "(or the same keys in a Dask YAML file) to the pool's CA and this "
                "process's certificate"
            )
    return security


def local_protocol(security: Security) -> str:
    """The protocol of a pool this process starts: TLS where the config requires it."""
    return "tls" if security.require_encryption else "tcp"


def is_tls(address: str) -> bool:
    return address.startswith("tls://")


def environment_name(key: str) -> str:
    """The environment variable Dask reads ``key`` from."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")
