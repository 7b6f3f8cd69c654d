"""Addresses nodes advertise to each other (multi-node replicas): public or not.

Shared by the agent (which refuses to start rpc-server on a public address without the operator's opt-in)
and the controller (which does not place such parts there).
"""

from __future__ import annotations

import ipaddress


def is_public(address: str) -> bool:
    """A globally routable IP address. A host name is resolved by whoever binds it, not judged here."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False
