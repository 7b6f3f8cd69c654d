"""How an agent comes to trust its controller: the CA fingerprint carried by the join token.

On first join the agent fetches the certificate chain the controller presents (unverified), keeps the
certificate whose SHA-256 matches the token's fingerprint, and from then on verifies the controller
against that CA (stored in the agent's data dir). A mismatch refuses to connect.
"""

from __future__ import annotations

import _ssl
import hashlib
import socket
import ssl
from pathlib import Path

from fleet.common.trust import SERVER_NAME


class TrustError(Exception):
    pass



def fetch_chain(address: str, timeout: float = 10.0) -> list[bytes]:
    """DER certificates the server presents, leaf first (no verification: we pin the CA ourselves)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
            # The whole chain (CPython's SSLSocket exposes it from 3.13; the C object has it since 3.10).
            chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[union-attr]
            return [c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    except ssl.SSLError as e:
        raise TrustError(f"TLS handshake with {address} failed ({e}); is the controller running with TLS?") from e


def discover_ca(address: str, fingerprint: str) -> bytes:
    """The controller's CA as PEM, if it matches `fingerprint`; TrustError otherwise."""
    seen = []
    for der in fetch_chain(address):
        fp = hashlib.sha256(der).hexdigest()
        seen.append(fp[:16])
        if fp == fingerprint:
            return ssl.DER_cert_to_PEM_cert(der).encode()
    raise TrustError(f"the controller at {address} is not the one this join token names: its CA fingerprint "
                     f"is not {fingerprint[:16]}… (saw {', '.join(seen) or 'no certificate'}); refusing to connect")


def ca_path(data_dir: Path) -> Path:
    return data_dir / "controller-ca.crt"

