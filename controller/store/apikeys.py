"""API keys: client keys for the OpenAI gateway and viewer keys for the read-only pages.

Stored as sha256 hashes, shown in clear exactly once.

Rows live in the `apikey` table (fleet.controller.store.schema).
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet.controller.core.errors import AlreadyExists, InvalidArgument, NotFound
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.schema import ApiKeyRow

PREFIX = "sk-fleet-"
MAX_NAME = 64
CLIENT = "client"  # calls the OpenAI gateway (/v1)
VIEWER = "viewer"  # reads the capacity page, /api/capacity and /metrics; nothing else
ROLES = (CLIENT, VIEWER)


def public(row: ApiKeyRow) -> dict[str, object]:
    """What may be shown about a key after creation: never the key, never its hash."""
    return {"id": row.id, "name": row.name, "created_at": row.created_at, "revoked": row.revoked, "role": row.role}


def create(engine: Engine, name: str = "", now: float | None = None, role: str = CLIENT) -> tuple[ApiKeyRow, str]:
    """A new key; returns its row and the clear key (the only time it exists outside the client)."""
    if role not in ROLES:
        raise InvalidArgument(f"invalid role {role[:40]!r}: {' or '.join(ROLES)}")
    name = name.strip()
    if len(name) > MAX_NAME or (name and not name.replace("-", "").replace("_", "").replace(".", "").isalnum()):
        raise InvalidArgument(f"invalid key name {name!r}: up to {MAX_NAME} letters, digits, '-', '_' or '.'")
    if name.isdigit():
        raise InvalidArgument(f"key name {name!r} is all digits and would be mistaken for an id by `revoke`")
    key = PREFIX + secrets.token_urlsafe(32)
    with Session(engine, expire_on_commit=False) as s:
        if name and s.exec(select(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked == False)).first():  # noqa: E712
            raise AlreadyExists(f"an active API key named {name!r} exists; revoke it or choose another --name")
        row = ApiKeyRow(name=name, key_hash=token_hash(key), created_at=time.time() if now is None else now, role=role)
        s.add(row)
        s.flush()
        if not name:
            row.name = f"key-{row.id}"  # every key gets a name `revoke` can take
            s.add(row)
        s.commit()
    return row, key


def list_keys(engine: Engine, include_revoked: bool = True) -> list[ApiKeyRow]:
    with Session(engine) as s:
        q = select(ApiKeyRow).order_by(ApiKeyRow.id)  # type: ignore[arg-type]
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked == False)  # noqa: E712
        return list(s.exec(q).all())


def revoke(engine: Engine, name_or_id: str) -> list[ApiKeyRow]:
    """Revoke the active key with this id, or every active key with this name."""
    if not name_or_id or len(name_or_id) > MAX_NAME:
        raise InvalidArgument(f"name a key by its name or id (at most {MAX_NAME} characters)")
    with Session(engine, expire_on_commit=False) as s:
        active = select(ApiKeyRow).where(ApiKeyRow.revoked == False)  # noqa: E712
        rows = list(s.exec(active.where(ApiKeyRow.name == name_or_id)).all())
        if not rows and name_or_id.isdigit() and len(name_or_id) < 19:  # an id fits in 64 bits
            rows = list(s.exec(active.where(ApiKeyRow.id == int(name_or_id))).all())
        if not rows:
            names = ", ".join(f"{r.name} ({r.id})" for r in s.exec(active.limit(20)).all()) or "none"
            raise NotFound(f"no active API key named or numbered {name_or_id!r}; active keys: {names}")
        for r in rows:
            r.revoked = True
            s.add(r)
        s.commit()
        return rows


def valid(engine: Engine, key: str, role: str = CLIENT) -> bool:
    """True when `key` is an active key of `role`. Looked up by hash: the clear key is never stored or compared."""
    if not key.startswith(PREFIX) or len(key) > 256:
        return False
    with Session(engine) as s:
        row = s.exec(select(ApiKeyRow).where(ApiKeyRow.key_hash == token_hash(key), ApiKeyRow.role == role,
                                             ApiKeyRow.revoked == False)).first()  # noqa: E712
    return row is not None
