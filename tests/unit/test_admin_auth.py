"""Admin service doors and the token rules, as table tests of the pure parts."""

from __future__ import annotations

import pytest
import typer

from fleet.cli.tokens import parse_ttl
from fleet.controller.app.credentials import Credentials
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.rpc.auth import MAX_METADATA, metadata_size, refusal
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.schema import TokenRow
from fleet.controller.store.tokens import MAX_TTL, state, validate_description, validate_ttl


def creds() -> Credentials:
    return Credentials(admin_hashes={token_hash("admin-secret")}, node_hashes={"n1": token_hash("n1-secret")})


@pytest.mark.parametrize("method", ["/fleet.v1.Admin/CreateToken", "/fleet.v1.Admin/RemoveNode"])
def test_admin_methods_need_the_admin_token(method: str) -> None:
    c = creds()
    assert refusal(method, {"authorization": "Bearer admin-secret"}, c) is None
    assert "no admin token" in refusal(method, {}, c)
    assert "rejected" in refusal(method, {"authorization": "Bearer n1-secret", "x-fleet-node": "n1"}, c)
    assert refusal("/fleet.v1.Adminx/CreateToken", {"authorization": "Bearer admin-secret"}, c)


def test_metadata_size_counts_keys_values_and_bytes() -> None:
    assert metadata_size([("a", "bc"), ("k-bin", b"\x00" * 10)]) == 3 + 15
    assert metadata_size(None) == 0
    assert metadata_size([("x", "y" * MAX_METADATA)]) > MAX_METADATA


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("30m", 1800), ("7d", 604800), ("90", 90),
                                               ("2w", 1209600), ("never", 0), ("0", 0), (" 1S ", 1)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1.5h", "1y", "9999999999s"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(typer.Exit):
        parse_ttl(text)


def test_token_state_and_validation() -> None:
    assert state(TokenRow(kind="join", token_hash="h", expires_at=None), now=1e12) == "active"
    assert state(TokenRow(kind="join", token_hash="h", expires_at=100.0), now=100.0) == "expired"
    assert state(TokenRow(kind="join", token_hash="h", expires_at=100.0, revoked=True), now=1.0) == "revoked"
    assert validate_description("  rack 3 — row B ☃ ") == "rack 3 — row B ☃"
    for bad in ("x" * 257, "a\x00b", "line\nbreak inside", "\u202e"):
        with pytest.raises(InvalidArgument):
            validate_description(bad)
    assert validate_ttl(MAX_TTL) == MAX_TTL
    with pytest.raises(InvalidArgument):
        validate_ttl(MAX_TTL + 1)
