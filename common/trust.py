"""What agent, controller and CLI agree on about trust: the join token's format and the TLS server name.

A join token is `<secret>.<sha256 of the controller's CA>`; the fingerprint lets an agent verify the
controller without copying files. Every client dials with SERVER_NAME as the TLS target name, whatever
address it uses, and trusts the pinned private CA.
"""

from __future__ import annotations

SERVER_NAME = "fleet-controller"  # the name the controller's certificate carries
# A refused agent session carries why in this trailing metadata key, for the agent to act on.
REFUSAL_KEY = "x-fleet-refusal"
NODE_UNKNOWN = "node-unknown"  # no node of that name (removed, or never joined): the name is free to join again


def split_token(token: str) -> tuple[str, str]:
    """'<secret>.<sha256 of the CA>' -> (secret, fingerprint); a bare secret has no fingerprint."""
    secret, dot, fingerprint = token.strip().rpartition(".")
    if not dot:
        return token.strip(), ""
    return secret, fingerprint.lower()


def join_token(secret: str, fingerprint: str) -> str:
    """The inverse of split_token; bare when the controller is plaintext (no CA)."""
    return f"{secret}.{fingerprint}" if fingerprint else secret


def channel_options(tls: bool) -> list[tuple[str, object]]:
    # The controller's certificate names SERVER_NAME whatever address we dial; trust is the pinned CA.
    return [("grpc.ssl_target_name_override", SERVER_NAME)] if tls else []
