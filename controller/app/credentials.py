"""Who may call what, in memory: the hashes of the admin token and of every node's credential.

Kept in memory so that no RPC waits on the database to be authenticated; the store is the durable copy
(loaded at start, updated by join and removal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.controller.store.hashing import same_hash, token_hash


@dataclass
class Credentials:
    admin_hashes: set[str] = field(default_factory=set)
    node_hashes: dict[str, str] = field(default_factory=dict)

    def is_admin(self, token: str) -> bool:
        h = token_hash(token)
        return any(same_hash(h, a) for a in self.admin_hashes)

    def is_node(self, node: str, token: str) -> bool:
        known = self.node_hashes.get(node)
        return known is not None and same_hash(known, token_hash(token))
