"""The pool's Security, from Dask's config: what it refuses before connecting."""

from __future__ import annotations

import dask.config
import pytest

from labrun.errors import ServerUnavailable
from labrun.executor.security import local_protocol, pool_security

TLS = {
    "distributed.comm.require-encryption": True,
    "distributed.comm.tls.ca-file": "/pool/ca.pem",
    "distributed.comm.tls.client.cert": "/pool/client.pem",
}


def test_without_tls_settings_nothing_changes() -> None:
    security = pool_security("client", address="tcp://sched:8786")
    assert not security.require_encryption and local_protocol(security) == "tcp"


def test_a_plain_address_is_refused_where_the_config_requires_encryption() -> None:
    with dask.config.set(TLS), pytest.raises(ServerUnavailable) as refused:
        pool_security("client", address="tcp://sched:8786")
    assert "tls://sched:8786" in refused.value.message
    assert "distributed.comm.require-encryption" in refused.value.message


def test_a_missing_certificate_is_named_with_its_environment_variable() -> None:
    # A tls:// address, and a config with the CA and a client's certificate only
    with dask.config.set({k: v for k, v in TLS.items() if "require" not in k}):
        pool_security("client", address="tls://sched:8786")  # what a kernel needs
        with pytest.raises(ServerUnavailable) as refused:
            pool_security("worker", address="tls://sched:8786")
    assert "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT" in refused.value.message

    # A local pool the config asks to encrypt needs every role's certificate
    with dask.config.set(TLS), pytest.raises(ServerUnavailable) as refused:
        pool_security("client", "scheduler", "worker")
    message = refused.value.message
    assert "distributed.comm.tls.scheduler.cert" in message
    assert "distributed.comm.tls.client.cert" not in message
