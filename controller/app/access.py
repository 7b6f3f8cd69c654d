"""Access: the first-start token files, join tokens (`fleet token`) and client API keys (`fleet apikey`).

Secrets are shown once and stored hashed (fleet.controller.store.tokens / apikeys). The first-start
files DATA_DIR/join-token and DATA_DIR/admin-token are 0600; the join token carries the CA fingerprint.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from fleet.common.trust import join_token, split_token
from fleet.controller.app.controller import Controller
from fleet.controller.store import apikeys, tokens
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import ApiKeyRow

log = logging.getLogger("fleet.controller")


def write_secret(path: Path, value: str) -> None:
    """Create a 0600 file atomically; never widen permissions on the way."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)


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


def create_apikey(ctl: Controller, name: str) -> tuple[ApiKeyRow, str]:
    return apikeys.create(ctl.store.engine, name)


def list_apikeys(ctl: Controller) -> list[ApiKeyRow]:
    return apikeys.list_keys(ctl.store.engine)


def revoke_apikey(ctl: Controller, name_or_id: str) -> list[ApiKeyRow]:
    return apikeys.revoke(ctl.store.engine, name_or_id)


def apikey_valid(ctl: Controller, key: str) -> bool:
    return apikeys.valid(ctl.store.engine, key)
