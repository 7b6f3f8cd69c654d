"""TLS for the controller's port: a private CA and a server certificate, created on first start.

The join token carries the CA's SHA-256 fingerprint, so a joining agent verifies the controller
without anyone copying files (kubeadm's discovery hash, done with a certificate chain).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.common.trust import SERVER_NAME  # what agents and the CLI verify the certificate against


@dataclass(frozen=True)
class TLSOptions:
    """`fleet controller run`'s TLS flags: plaintext (loopback only), extra names, or given files."""

    insecure: bool = False
    sans: tuple[str, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class ServerTLS:
    ca_pem: bytes
    cert_chain_pem: bytes  # server certificate followed by the CA
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return ca_fingerprint(self.ca_pem)


def ca_fingerprint(ca_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _sans(extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in [socket.gethostname(), *extra]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host:
                names.append(x509.DNSName(host))
    unique: list[x509.GeneralName] = []
    for n in names:
        if n not in unique:
            unique.append(n)
    return unique


def make_ca(days: int = 3650) -> tuple[bytes, bytes]:
    """A new private CA: (certificate PEM, key PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    return ca.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key)


def issue_server(ca_pem: bytes, ca_key_pem: bytes, sans: list[str], days: int = 3650) -> tuple[bytes, bytes]:
    """A server certificate for this controller signed by the CA: (certificate PEM, key PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_sans(sans)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


class SharedCA(Protocol):
    """Where several controllers on one database keep their one CA (fleet.controller.store.vault)."""

    def get(self) -> tuple[bytes, bytes] | None:
        ...

    def put_once(self, ca_pem: bytes, key_pem: bytes) -> tuple[bytes, bytes]:
        """Store this CA unless one is there already; returns the one that is."""
        ...


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def load_or_create(tls_dir: Path, sans: list[str], cert_file: Path | None = None, key_file: Path | None = None,
                   ca_file: Path | None = None, shared: SharedCA | None = None) -> ServerTLS:
    """Given files win. Otherwise the CA is the database's when one is shared (so one join token's fingerprint
    holds for every controller), else DATA_DIR/tls's, created on first start; the server certificate is this
    controller's own, issued by that CA and kept in DATA_DIR/tls."""
    if cert_file or key_file or ca_file:
        if not (cert_file and key_file and ca_file):
            raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
        ca, cert, key = ca_file.read_bytes(), cert_file.read_bytes(), key_file.read_bytes()
        return ServerTLS(ca_pem=ca, cert_chain_pem=cert + ca, key_pem=key)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    local_ca, local_key = _read(tls_dir / "ca.crt"), _read(tls_dir / "ca.key")
    local = (local_ca, local_key) if local_ca and local_key else None
    if shared is not None:
        ca, ca_key = shared.get() or shared.put_once(*(local or make_ca()))
    else:
        ca, ca_key = local or make_ca()
    if (ca, ca_key) != local:
        _write(tls_dir / "ca.key", ca_key, 0o600)
        _write(tls_dir / "ca.crt", ca, 0o644)
    cert, key = _read(tls_dir / "server.crt"), _read(tls_dir / "server.key")
    if not cert or not key or not signed_by(cert, ca):
        cert, key = issue_server(ca, ca_key, sans)
        _write(tls_dir / "server.key", key, 0o600)
        _write(tls_dir / "server.crt", cert, 0o644)
    return ServerTLS(ca_pem=ca, cert_chain_pem=cert + ca, key_pem=key)


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
