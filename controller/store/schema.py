"""The whole schema: every table the controller keeps, in one place (SQLModel; SQLite or PostgreSQL).

Byte counts are BIGINT: PostgreSQL's INTEGER stops at 2 GiB, and a GPU holds 80.

Rows are plain data moved in and out by the repository (fleet.controller.store.repository); nothing here
decides. Every table is created when the store opens (fleet.controller.store.db), none lazily.
"""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class NodeRow(SQLModel, table=True):
    __tablename__ = "node"
    name: str = Field(primary_key=True)
    credential_hash: str
    # What the operator asked for: ready, cordoned, draining, drained. Liveness is separate (alive),
    # so a cordon survives the node going offline and coming back.
    admin_state: str = "ready"
    alive: bool = True
    inventory: str = "{}"  # JSON of fleet.v1.Inventory as last reported
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    cordon_reason: str = ""
    cordoned_by: str = ""
    cordoned_at: float = 0.0
    generation: int = Field(default=0, sa_type=BigInteger)  # bumped whenever the node's desired replica set changes


class GpuRow(SQLModel, table=True):
    __tablename__ = "gpu"
    uuid: str = Field(primary_key=True)
    node: str = Field(foreign_key="node.name", index=True)
    index: int = 0
    name: str = ""
    memory_total: int = Field(default=0, sa_type=BigInteger)
    memory_used: int = Field(default=0, sa_type=BigInteger)
    compute_capability: str = ""
    driver: str = ""
    utilization: int = 0
    temperature: int = -1
    declared: bool = False


class DeploymentRow(SQLModel, table=True):
    __tablename__ = "deployment"
    name: str = Field(primary_key=True)
    model: str
    quant: str
    engine: str
    context: int
    replicas_wanted: int
    device: str = "gpu"
    strategy: str = "pack"
    tp: int = 1
    source: str = ""
    file: str = ""
    why: str = ""
    state: str = "active"  # active | removing
    created_at: float = 0.0
    estimate: str = "{}"  # JSON: weights, kv_cache, activations, runtime, total (bytes, per GPU)
    request: str = "{}"  # JSON of the PlaceRequest, to place again when a replica must move
    max_moves: int = 1  # replicas of this deployment moved at once by a drain
    # JSON: how the engines are launched beyond the defaults: {"rope": {scaling, factor, original_context,
    # theta}, "notes": [...]} (context beyond the model's native length)
    launch: str = "{}"


class ReplicaRow(SQLModel, table=True):
    __tablename__ = "replica"
    id: str = Field(primary_key=True)
    deployment: str = Field(foreign_key="deployment.name", index=True)
    ordinal: int = 0
    node: str = Field(foreign_key="node.name", index=True)
    desired: str = "run"  # run | stop: what the node's agent is told
    state: str = "pending"  # as last reported: pending, starting, healthy, failed, stopping, stopped, unknown
    endpoint: str = ""
    api_key: str = ""
    gpu_memory_utilization: float = 0.0
    tp: int = 1
    ram_bytes: int = Field(default=0, sa_type=BigInteger)
    kv_cache_bytes: int = Field(default=0, sa_type=BigInteger)
    message: str = ""
    restarts: int = 0
    created_at: float = 0.0
    healthy_since: float = 0.0  # when it last became healthy (drains wait a minimum healthy time)
    replaces: str = ""  # a drain's replacement: the replica it takes over from
    # A replica over several nodes (multi-node): this row is its main part (part 0, serves HTTP, on `node`);
    # the others are PartRows. `epoch` is the gang's generation: a part that crashed bumps it, and every
    # part restarts in order (rpc-servers and followers first).
    nodes: int = 1
    epoch: int = Field(default=0, sa_type=BigInteger)
    reported_epoch: int = Field(default=0, sa_type=BigInteger)  # the epoch the main part last reported
    address: str = ""  # the main part's rendezvous host:port (vLLM --master-addr/--master-port), as reported
    gpu_layers: int = 0  # llama.cpp main over several nodes on CPU: layers offloaded to the rpc-servers (-ngl)


class PartRow(SQLModel, table=True):
    """A part of a multi-node replica other than the main: an rpc-server (llama.cpp) or a follower (vLLM)."""

    __tablename__ = "part"
    id: str = Field(primary_key=True)  # what its node runs it as: <replica id>-part<rank>
    replica: str = Field(foreign_key="replica.id", index=True)
    rank: int = 1
    node: str = Field(foreign_key="node.name", index=True)
    role: str = "rpc"  # rpc | follower
    ram_bytes: int = Field(default=0, sa_type=BigInteger)  # device cpu: RAM reserved on its node
    state: str = "pending"  # as last reported by its node
    address: str = ""  # host:port it listens on (rpc-server), as reported
    message: str = ""
    restarts: int = 0
    epoch: int = Field(default=0, sa_type=BigInteger)  # the gang epoch it last reported


class DrainRow(SQLModel, table=True):
    """A drain in progress survives controller restarts: the reconciler picks it up again."""

    __tablename__ = "drain"
    node: str = Field(primary_key=True, foreign_key="node.name")
    state: str = "active"  # active | done | cancelled
    started_at: float = 0.0
    deadline: float = 0.0  # after it, a replica that cannot move is stopped anyway (break-before-make)
    force: bool = False
    reason: str = ""
    by: str = ""
    message: str = ""  # what blocks it, or what it is doing


class ReservationRow(SQLModel, table=True):
    __tablename__ = "reservation"
    id: int | None = Field(default=None, primary_key=True)
    replica: str = Field(foreign_key="replica.id", index=True)
    gpu_uuid: str = Field(foreign_key="gpu.uuid", index=True)
    gpu_index: int = 0
    bytes: int = Field(default=0, sa_type=BigInteger)


class TokenRow(SQLModel, table=True):
    __tablename__ = "token"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # join | admin
    token_hash: str = Field(index=True)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked: bool = False


class EventRow(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    kind: str
    node: str = ""
    message: str = ""
    deployment: str = ""  # upgrade step 4 (fleet.controller.store.db.STEPS) adds it to older databases


class JoinTokenMeta(SQLModel, table=True):
    __tablename__ = "join_token_meta"
    token_id: int = Field(primary_key=True, foreign_key="token.id")
    description: str = ""


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "apikey"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    key_hash: str = Field(index=True)
    created_at: float = 0.0
    revoked: bool = False
    # client: calls the OpenAI gateway; viewer: reads the capacity page, /api/capacity and /metrics.
    role: str = "client"


class NodeReplacement(SQLModel, table=True):
    """A one-time token that lets a new agent take over a known node's name (`fleet node replace NAME`)."""

    __tablename__ = "node_replacement"
    node: str = Field(primary_key=True, foreign_key="node.name")
    token_hash: str = Field(index=True)
    created_at: float = 0.0
    expires_at: float = 0.0


class ChangeRow(SQLModel, table=True):
    """The change feed: one row per node or deployment a transaction changed, written in that transaction.

    Every controller tails it (fleet.controller.store.mirror) and reloads what it names, so its in-memory
    copy follows the database whichever controller wrote. Old rows are pruned.
    """

    __tablename__ = "change"
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(default=0.0, index=True)
    kind: str  # node | gpus | deployment (fleet.controller.store.mirror)
    key: str


class ObservationRow(SQLModel, table=True):
    """What one replica really used (its agent's last measurement), kept after the replica is gone: the
    controller learns from it (fleet.controller.core.observed). Keyed for lookups by (model, quant, engine,
    gpu_type, tp, pp, context); figures per GPU, or RAM on CPU."""

    __tablename__ = "observation"
    replica: str = Field(primary_key=True)
    deployment: str = ""
    node: str = ""
    model: str = Field(default="", index=True)
    quant: str = ""
    engine: str = ""
    engine_version: str = ""
    gpu_type: str = ""  # GPU type name, or "cpu"
    tp: int = 1
    pp: int = 1
    context: int = 0
    weights: int = Field(default=0, sa_type=BigInteger)
    kv_cache: int = Field(default=0, sa_type=BigInteger)
    activations: int = Field(default=0, sa_type=BigInteger)
    runtime: int = Field(default=0, sa_type=BigInteger)
    total: int = Field(default=0, sa_type=BigInteger)
    ram: int = Field(default=0, sa_type=BigInteger)
    gpus: str = "{}"  # JSON: GPU UUID -> bytes (NVML)
    reserved: int = Field(default=0, sa_type=BigInteger)  # per GPU (or RAM) when measured
    over: bool = False  # used more than it reserved
    measured_at: float = 0.0


class SchemaVersionRow(SQLModel, table=True):
    """Which upgrade steps (fleet.controller.store.db.STEPS) this database has had: one row."""

    __tablename__ = "schema_version"
    id: int = Field(default=1, primary_key=True)
    version: int = 0


class LeaseRow(SQLModel, table=True):
    """Who does the fleet-wide duties (fleet.controller.store.lease); expires_at is the database's clock."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True)
    holder: str = ""
    expires_at: float = 0.0


class SecretRow(SQLModel, table=True):
    """What every controller on one database must share to be one control plane: the private CA (its key
    included: whoever can read this database is trusted as a controller)."""

    __tablename__ = "secret"
    name: str = Field(primary_key=True)
    value: str = ""
