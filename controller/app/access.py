"""Access: the first-start token files, join tokens (`fleet token`), replacement tokens (`fleet node replace`)
and API keys (`fleet apikey`: client keys for the gateway, viewer keys for the read-only pages).

Secrets are shown once and stored hashed (fleet.controller.store.tokens / apikeys). The first-start
files DATA_DIR/join-token and DATA_DIR/admin-token are 0600; the join token carries the CA fingerprint.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fleet.common.private import write_private
from fleet.common.trust import join_token, split_token
from fleet.controller.app.controller import Controller
from fleet.controller.store import apikeys, tokens
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import ApiKeyRow

log = logging.getLogger("fleet.controller")


def write_secret(path: Path, value: str) -> None:
    """Create a 0600 file atomically; never widen permissions on the way."""
    write_private(path, (value + "\n").encode())


def ensure_token(store: Store, data_dir: Path, kind: str, fingerprint: str = "") -> str:
    """The token in DATA_DIR/<kind>-token, created on first start and known (hashed) to the store.

    A join token is written as `<secret>.<CA fingerprint>` so agents can verify this controller.
    """
    path = data_dir / f"{kind}-token"
    secret = split_token(path.read_text())[0] if path.exists() else secrets.token_urlsafe(32)
    text = join_token(secret, fingerprint)
    if not path.exists() or path.read_text().strip() != text:
        write_secret(path, text)
        log.info("wrote the %s token to %s", kind, path)
    if not store.has_token(kind, secret):  # known but expired or revoked stays refused
        store.add_token(kind, secret)
    return secret


def _file_secret(ctl: Controller, kind: str) -> str:
    if ctl.data_dir is None:
        return ""
    try:
        return (ctl.data_dir / f"{kind}-token").read_text().strip()
    except OSError:
        return ""


def _labels(ctl: Controller) -> dict[str, str]:
    first = split_token(_file_secret(ctl, "join"))[0]
    return {token_hash(first): "first-start join token (DATA_DIR/join-token)"} if first else {}


def create_join_token(ctl: Controller, ttl_seconds: int, description: str, now: float) -> tuple[tokens.TokenInfo, str]:
    """A new join token; returns what may be listed and the token to hand to agents (shown once)."""
    info, secret = tokens.create(ctl.store, ttl_seconds, description, now)
    log.info("created join token %d (%s)", info.id, f"expires in {ttl_seconds}s" if ttl_seconds else "never expires")
    # main writes DATA_DIR/join-token at every start with the CA fingerprint it serves (empty when
    # --insecure), so this is right for a generated CA, a given --tls-ca and plaintext alike.
    return info, join_token(secret, split_token(_file_secret(ctl, "join"))[1])


def list_tokens(ctl: Controller, now: float) -> list[tokens.TokenInfo]:
    return tokens.list_tokens(ctl.store, now, _labels(ctl))


def revoke_token(ctl: Controller, number: int, now: float) -> tokens.TokenInfo:
    """Revoke join token `number` (`fleet token list` numbers join tokens only)."""
    info, revoked_hash = tokens.revoke(ctl.store, number, now)
    first = split_token(_file_secret(ctl, "join"))[0]
    if first and ctl.data_dir is not None and token_hash(first) == revoked_hash:
        # main re-adds the file's token at start when it is not valid: drop the file so a restart makes a
        # fresh one instead of reviving the revoked secret.
        (ctl.data_dir / "join-token").unlink(missing_ok=True)
        log.warning("revoked the first-start join token; removed DATA_DIR/join-token")
    log.info("revoked join token %d", info.id)
    return info


def replace_node(ctl: Controller, name: str, ttl_seconds: int, now: float) -> tuple[str, float]:
    """`fleet node replace NAME`: a one-time token with which a new agent takes over the known node `name`.

    The node keeps working with its current agent until the replacement joins; then the old credential is
    void and its session is closed. Returns the token to hand to the new agent (shown once) and its expiry.
    """
    secret, expires = tokens.create_replacement(ctl.store, name, ttl_seconds, now)
    log.warning("issued a replacement token for node %s (expires in %.0fs)", name, expires - now)
    return join_token(secret, split_token(_file_secret(ctl, "join"))[1]), expires


def create_apikey(ctl: Controller, name: str, role: str = apikeys.CLIENT) -> tuple[ApiKeyRow, str]:
    row, key = apikeys.create(ctl.store.engine, name, role=role)
    log.info("created API key %s (id %s, role %s)", row.name, row.id, row.role)
    return row, key


def list_apikeys(ctl: Controller) -> list[ApiKeyRow]:
    return apikeys.list_keys(ctl.store.engine)


def revoke_apikey(ctl: Controller, name_or_id: str) -> list[ApiKeyRow]:
    rows = apikeys.revoke(ctl.store.engine, name_or_id)
    ctl.keys_epoch += 1  # the HTTP edge drops the keys it had checked: a revoke takes effect at once
    log.info("revoked API key(s) %s", ", ".join(f"{r.name} ({r.id})" for r in rows))
    return rows


def apikey_valid(ctl: Controller, key: str, role: str = apikeys.CLIENT) -> bool:
    return apikeys.valid(ctl.store.engine, key, role)
