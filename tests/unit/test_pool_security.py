"""The pool's Security, from Dask's config: what it refuses before connecting, and the README's
example config, which must be what it reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dask.config
import pytest
import yaml

from labrun.errors import ServerUnavailable
from labrun.executor.security import environment_name, local_protocol, pool_security

README = Path(__file__).resolve().parents[2] / "README.md"
TLS = {
    "distributed.comm.require-encryption": True,
    "distributed.comm.tls.ca-file": "/pool/ca.pem",
    "distributed.comm.tls.client.cert": "/pool/client.pem",
}


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    found: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            found.update(dotted(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


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


def test_the_readmes_dask_config_is_the_one_read() -> None:
    text = README.read_text()
    (block,) = re.findall(r"```yaml\n(distributed:.*?)```", text, re.DOTALL)
    # Key by key: a nested mapping would replace the whole of Dask's `distributed` section.
    with dask.config.set(dotted(yaml.safe_load(block))):
        security = pool_security("client", "scheduler", "worker", address="tls://sched:8786")
    assert local_protocol(security) == "tls"
    assert security.tls_worker_key == "/etc/labrun/worker.key"
    # And the environment variables it names are those Dask reads
    for key in ("distributed.comm.require-encryption", "distributed.comm.tls.ca-file"):
        assert environment_name(key) in text
    named = set(re.findall(r"DASK_DISTRIBUTED__COMM__\w+", text))
    assert named == {
        environment_name(k)
        for k in (
            "distributed.comm.require-encryption",
            "distributed.comm.tls.ca-file",
            "distributed.comm.tls.client.cert",
        )
    }
