"""Join tokens with an expiry and a description: create, list, revoke (`fleet token ...`).

The secret's hash, expiry and revoked flag live in the `token` table, which Register checks
(`Store.token_valid`), so a revoke or an expiry takes effect on the next join. What the operator wrote
about a token lives beside it in `join_token_meta`, keyed by the token row's id. The clear secret
exists only in the CreateToken answer.

Operators see join tokens numbered 1, 2, 3… in creation order, their own id space: the admin token (a
row of the same table) is not a join token, is never listed here and takes no number, so `fleet token
revoke 2` on a fresh controller means the second join token, never the admin token. Rows are never
deleted (a revoke only sets a flag), so a token keeps its number.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlmodel import Session, col, select

from fleet.controller.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from fleet.controller.store.hashing import same_hash, token_hash
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import JoinTokenMeta, NodeReplacement, NodeRow, TokenRow

MAX_DESCRIPTION = 256
MAX_TTL = 10 * 365 * 86400  # seconds; longer is "never", which is ttl 0
MAX_ACTIVE = 1000  # usable join tokens at once: more is a script gone wrong, and Register scans them all
REPLACE_TTL = 3600  # a replacement token's default lifetime (seconds)


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token after creation: never the secret, never its hash."""

    id: int
    kind: str
    description: str
    created_at: float
    expires_at: float | None
    revoked: bool
    state: str  # active, expired or revoked


def state(row: TokenRow, now: float) -> str:
    if row.revoked:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def validate_description(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(f"description is {len(text)} characters; at most {MAX_DESCRIPTION}")
    if not all(ch.isprintable() for ch in text):
        raise InvalidArgument("description has control characters; use printable text")
    return text


def validate_ttl(ttl_seconds: int) -> int:
    if ttl_seconds > MAX_TTL:
        raise InvalidArgument(f"ttl of {ttl_seconds}s is more than 10 years; use 0 for a token that never expires")
    return ttl_seconds


def _info(row: TokenRow, number: int, description: str, now: float) -> TokenInfo:
    return TokenInfo(id=number, kind=row.kind, description=description, created_at=row.created_at,
                     expires_at=row.expires_at, revoked=row.revoked, state=state(row, now))


def _join_rows(s: Session) -> list[TokenRow]:
    """Every join token, oldest first: the position + 1 is the number operators see."""
    return list(s.exec(select(TokenRow).where(TokenRow.kind == "join").order_by(col(TokenRow.id))).all())


def create(store: Store, ttl_seconds: int, description: str, now: float) -> tuple[TokenInfo, str]:
    """A new join token; returns what may be listed and the clear secret (shown once)."""
    description = validate_description(description)
    ttl_seconds = validate_ttl(ttl_seconds)
    secret = secrets.token_urlsafe(32)
    with store.session() as s:
        rows = _join_rows(s)
        usable = [r for r in rows if state(r, now) == "active"]
        if len(usable) >= MAX_ACTIVE:
            raise FailedPrecondition(f"{len(usable)} join tokens are usable already; revoke some "
                                     "(`fleet token list`, `fleet token revoke ID`)")
        row = TokenRow(kind="join", token_hash=token_hash(secret), created_at=now,
                       expires_at=now + ttl_seconds if ttl_seconds else None)
        s.add(row)
        s.flush()  # the row's id, for its description
        assert row.id is not None
        s.add(JoinTokenMeta(token_id=row.id, description=description))
        s.commit()
    return _info(row, len(rows) + 1, description, now), secret


def list_tokens(store: Store, now: float, labels: dict[str, str] | None = None) -> list[TokenInfo]:
    """Every join token, oldest first. `labels` names tokens without a description by hash (the first-start file)."""
    labels = labels or {}
    with store.session() as s:
        rows = _join_rows(s)
        meta = {m.token_id: m.description for m in s.exec(select(JoinTokenMeta)).all()}
    out = []
    for number, r in enumerate(rows, start=1):
        label = meta.get(r.id or 0) or next((text for h, text in labels.items() if same_hash(h, r.token_hash)), "")
        out.append(_info(r, number, label, now))
    return out


def revoke(store: Store, number: int, now: float) -> tuple[TokenInfo, str]:
    """Revoke join token `number` (idempotent); returns it and its hash (to recognise the first-start file)."""
    with store.session() as s:
        rows = _join_rows(s)
        if not 0 < number <= len(rows):
            raise NotFound(f"no join token {number}; there are {len(rows)} (see `fleet token list`)")
        row = rows[number - 1]
        if not row.revoked:
            row.revoked = True
            s.add(row)
            s.commit()
        meta = s.get(JoinTokenMeta, row.id)
    return _info(row, number, meta.description if meta else "", now), row.token_hash


def join_refusal(store: Store, secret: str, now: float) -> str | None:
    """Why Register refuses this join secret, in words an operator can act on; None when it is valid."""
    wanted = token_hash(secret)
    with store.session() as s:
        rows = _join_rows(s)
    number, match = next(((i, r) for i, r in enumerate(rows, start=1) if same_hash(r.token_hash, wanted)),
                         (0, None))
    if match is None:
        return "join token rejected: use the controller's DATA_DIR/join-token or one from `fleet token create`"
    if state(match, now) == "revoked":
        return f"join token {number} was revoked; create a new one with `fleet token create`"
    if state(match, now) == "expired":
        return f"join token {number} expired; create a new one with `fleet token create`"
    return None



# ---------------------------------------------------------------- replacement tokens (`fleet node replace NAME`)
# One per node name, one use: the agent that joins with it takes over the name (and the node's replicas)
# and the node's old credential stops working. Issuing a new one replaces the previous one; removing the
# node deletes it (the row points at the node).


def create_replacement(store: Store, name: str, ttl_seconds: int, now: float) -> tuple[str, float]:
    """A one-time token for the known node `name`; returns the secret (shown once) and when it expires."""
    ttl_seconds = validate_ttl(ttl_seconds) or REPLACE_TTL
    secret = secrets.token_urlsafe(32)
    with store.session() as s:
        if s.get(NodeRow, name) is None:
            names = ", ".join(n.name for n in s.exec(select(NodeRow).limit(20)).all()) or "none"
            raise NotFound(f"no node named {name!r} to replace; nodes: {names} (a new node joins with a join token)")
        s.merge(NodeReplacement(node=name, token_hash=token_hash(secret), created_at=now, expires_at=now + ttl_seconds))
        s.commit()
    return secret, now + ttl_seconds


def replacement_node(store: Store, secret: str, now: float) -> str | None:
    """The node this secret may replace, when it is a live replacement token."""
    with store.read() as s:
        row = s.exec(select(NodeReplacement).where(NodeReplacement.token_hash == token_hash(secret))).first()
    return row.node if row is not None and row.expires_at > now else None


def claim_replacement(s: Session, name: str, secret: str, now: float) -> None:
    """Inside the Register transaction: use up `name`'s replacement token, or refuse."""
    row = s.get(NodeReplacement, name)
    if row is None or not same_hash(row.token_hash, token_hash(secret)) or row.expires_at <= now:
        raise Unauthenticated(f"the replacement token for node {name!r} was used or has expired; "
                              f"ask for a new one (`fleet node replace {name}`)")
    s.delete(row)
