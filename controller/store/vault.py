"""The CA every controller on one database serves with, kept in the database (table `secret`).

Stored once: the first controller to start puts its CA (or a new one); the others read it back, so one
join token (which carries the CA's fingerprint) is good for every controller.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from fleet.controller.store.repository import Store
from fleet.controller.store.schema import SecretRow

CA_CERT, CA_KEY = "tls.ca.crt", "tls.ca.key"


class DatabaseCA:
    """fleet.controller.tls.SharedCA over the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self) -> tuple[bytes, bytes] | None:
        with self.store.read() as s:
            cert, key = s.get(SecretRow, CA_CERT), s.get(SecretRow, CA_KEY)
        return (cert.value.encode(), key.value.encode()) if cert and key else None

    def put_once(self, ca_pem: bytes, key_pem: bytes) -> tuple[bytes, bytes]:
        try:
            with self.store.session() as s:
                s.add(SecretRow(name=CA_CERT, value=ca_pem.decode()))
                s.add(SecretRow(name=CA_KEY, value=key_pem.decode()))
                s.commit()
        except IntegrityError:
            pass  # another controller stored its CA first: use that one
        stored = self.get()
        assert stored is not None
        return stored
