"""A pool's certificates, and the Dask config that makes every process of it use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class PoolCertificates:
    """The pool's CA, one certificate of it for every member, and an intruder's
    certificate signed by another CA."""

    ca: Path
    cert: Path
    key: Path
    other_cert: Path
    other_key: Path

    @property
    def env(self) -> dict[str, str]:
        """Dask's TLS settings as a team sets them: environment variables every process
        of the pool (scheduler, workers, servers, kernels) reads."""
        env = {
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.ca),
        }
        for role in ("SCHEDULER", "WORKER", "CLIENT"):
            env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = str(self.cert)
            env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = str(self.key)
        return env


def pool_certificates(directory: Path) -> PoolCertificates:
    """A new CA and its certificates, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    member = ca.issue_cert("labrun-pool", "127.0.0.1", "localhost")
    intruder = other.issue_cert("intruder", "127.0.0.1")
    found = PoolCertificates(
        ca=directory / "ca.pem",
        cert=directory / "pool.pem",
        key=directory / "pool.key",
        other_cert=directory / "other.pem",
        other_key=directory / "other.key",
    )
    ca.cert_pem.write_to_path(str(found.ca))
    member.cert_chain_pems[0].write_to_path(str(found.cert))
    member.private_key_pem.write_to_path(str(found.key))
    intruder.cert_chain_pems[0].write_to_path(str(found.other_cert))
    intruder.private_key_pem.write_to_path(str(found.other_key))
    return found
