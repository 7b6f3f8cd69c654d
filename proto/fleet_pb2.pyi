from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gpu(_message.Message):
    __slots__ = ("uuid", "index", "name", "memory_total", "memory_used", "compute_capability", "driver", "utilization", "temperature", "declared")
    UUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    index: int
    name: str
    memory_total: int
    memory_used: int
    compute_capability: str
    driver: str
    utilization: int
    temperature: int
    declared: bool
    def __init__(self, uuid: _Optional[str] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., memory_total: _Optional[int] = ..., memory_used: _Optional[int] = ..., compute_capability: _Optional[str] = ..., driver: _Optional[str] = ..., utilization: _Optional[int] = ..., temperature: _Optional[int] = ..., declared: bool = ...) -> None: ...

class Engine(_message.Message):
    __slots__ = ("name", "version", "path", "multinode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MULTINODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    path: str
    multinode: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ..., multinode: bool = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("hostname", "gpus", "cpu_count", "ram_total", "ram_available", "models_dir", "disk_total", "disk_free", "engines", "agent_version", "labels", "gpu_probe", "advertise_address", "allow_public_rpc")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MODELS_DIR_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    GPU_PROBE_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PUBLIC_RPC_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    cpu_count: int
    ram_total: int
    ram_available: int
    models_dir: str
    disk_total: int
    disk_free: int
    engines: _containers.RepeatedCompositeFieldContainer[Engine]
    agent_version: str
    labels: _containers.ScalarMap[str, str]
    gpu_probe: str
    advertise_address: str
    allow_public_rpc: bool
    def __init__(self, hostname: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., cpu_count: _Optional[int] = ..., ram_total: _Optional[int] = ..., ram_available: _Optional[int] = ..., models_dir: _Optional[str] = ..., disk_total: _Optional[int] = ..., disk_free: _Optional[int] = ..., engines: _Optional[_Iterable[_Union[Engine, _Mapping]]] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., gpu_probe: _Optional[str] = ..., advertise_address: _Optional[str] = ..., allow_public_rpc: bool = ...) -> None: ...

class GpuUsage(_message.Message):
    __slots__ = ("uuid", "memory_used", "utilization", "temperature")
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    memory_used: int
    utilization: int
    temperature: int
    def __init__(self, uuid: _Optional[str] = ..., memory_used: _Optional[int] = ..., utilization: _Optional[int] = ..., temperature: _Optional[int] = ...) -> None: ...

class ReplicaSpec(_message.Message):
    __slots__ = ("id", "deployment", "model", "quant", "engine", "gpu_uuids", "context", "tp", "reserved_bytes", "gpu_memory_utilization", "source", "api_key", "tensor_split", "kv_cache_bytes", "ram_bytes", "file", "device", "rope_scaling", "rope_factor", "rope_original_context", "rope_theta", "part")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    TENSOR_SPLIT_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROPE_SCALING_FIELD_NUMBER: _ClassVar[int]
    ROPE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ROPE_ORIGINAL_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ROPE_THETA_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    id: str
    deployment: str
    model: str
    quant: str
    engine: str
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    context: int
    tp: int
    reserved_bytes: _containers.RepeatedScalarFieldContainer[int]
    gpu_memory_utilization: float
    source: str
    api_key: str
    tensor_split: _containers.RepeatedScalarFieldContainer[float]
    kv_cache_bytes: int
    ram_bytes: int
    file: str
    device: str
    rope_scaling: str
    rope_factor: float
    rope_original_context: int
    rope_theta: float
    part: PartSpec
    def __init__(self, id: _Optional[str] = ..., deployment: _Optional[str] = ..., model: _Optional[str] = ..., quant: _Optional[str] = ..., engine: _Optional[str] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., context: _Optional[int] = ..., tp: _Optional[int] = ..., reserved_bytes: _Optional[_Iterable[int]] = ..., gpu_memory_utilization: _Optional[float] = ..., source: _Optional[str] = ..., api_key: _Optional[str] = ..., tensor_split: _Optional[_Iterable[float]] = ..., kv_cache_bytes: _Optional[int] = ..., ram_bytes: _Optional[int] = ..., file: _Optional[str] = ..., device: _Optional[str] = ..., rope_scaling: _Optional[str] = ..., rope_factor: _Optional[float] = ..., rope_original_context: _Optional[int] = ..., rope_theta: _Optional[float] = ..., part: _Optional[_Union[PartSpec, _Mapping]] = ...) -> None: ...

class PartSpec(_message.Message):
    __slots__ = ("replica_id", "rank", "role", "nnodes", "peers", "master_address", "hold", "epoch", "gpu_layers", "waiting_for")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NNODES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    rank: int
    role: str
    nnodes: int
    peers: _containers.RepeatedScalarFieldContainer[str]
    master_address: str
    hold: bool
    epoch: int
    gpu_layers: int
    waiting_for: str
    def __init__(self, replica_id: _Optional[str] = ..., rank: _Optional[int] = ..., role: _Optional[str] = ..., nnodes: _Optional[int] = ..., peers: _Optional[_Iterable[str]] = ..., master_address: _Optional[str] = ..., hold: bool = ..., epoch: _Optional[int] = ..., gpu_layers: _Optional[int] = ..., waiting_for: _Optional[str] = ...) -> None: ...

class GpuMemoryUse(_message.Message):
    __slots__ = ("uuid", "bytes")
    UUID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    bytes: int
    def __init__(self, uuid: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class ReplicaMemory(_message.Message):
    __slots__ = ("gpus", "ram", "weights", "kv_cache", "activations", "runtime", "total", "engine_version", "measured_at")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RAM_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuMemoryUse]
    ram: int
    weights: int
    kv_cache: int
    activations: int
    runtime: int
    total: int
    engine_version: str
    measured_at: float
    def __init__(self, gpus: _Optional[_Iterable[_Union[GpuMemoryUse, _Mapping]]] = ..., ram: _Optional[int] = ..., weights: _Optional[int] = ..., kv_cache: _Optional[int] = ..., activations: _Optional[int] = ..., runtime: _Optional[int] = ..., total: _Optional[int] = ..., engine_version: _Optional[str] = ..., measured_at: _Optional[float] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("id", "state", "endpoint", "pid", "message", "restarts", "memory", "address", "epoch")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    endpoint: str
    pid: int
    message: str
    restarts: int
    memory: ReplicaMemory
    address: str
    epoch: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., endpoint: _Optional[str] = ..., pid: _Optional[int] = ..., message: _Optional[str] = ..., restarts: _Optional[int] = ..., memory: _Optional[_Union[ReplicaMemory, _Mapping]] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("join_token", "name", "inventory")
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    join_token: str
    name: str
    inventory: Inventory
    def __init__(self, join_token: _Optional[str] = ..., name: _Optional[str] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("node_name", "credential")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    credential: str
    def __init__(self, node_name: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "gpus", "ram_available", "disk_free")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuUsage]
    ram_available: int
    disk_free: int
    def __init__(self, seq: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuUsage, _Mapping]]] = ..., ram_available: _Optional[int] = ..., disk_free: _Optional[int] = ...) -> None: ...

class ReplicaReport(_message.Message):
    __slots__ = ("applied_generation", "replicas")
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    applied_generation: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    def __init__(self, applied_generation: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ...) -> None: ...

class LogData(_message.Message):
    __slots__ = ("request_id", "data", "eof", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    data: bytes
    eof: bool
    error: str
    def __init__(self, request_id: _Optional[int] = ..., data: _Optional[bytes] = ..., eof: bool = ..., error: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("inventory", "heartbeat", "replicas", "log")
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    inventory: Inventory
    heartbeat: Heartbeat
    replicas: ReplicaReport
    log: LogData
    def __init__(self, inventory: _Optional[_Union[Inventory, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., replicas: _Optional[_Union[ReplicaReport, _Mapping]] = ..., log: _Optional[_Union[LogData, _Mapping]] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("request_id", "replica_id", "lines", "follow", "cancel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    replica_id: str
    lines: int
    follow: bool
    cancel: bool
    def __init__(self, request_id: _Optional[int] = ..., replica_id: _Optional[str] = ..., lines: _Optional[int] = ..., follow: bool = ..., cancel: bool = ...) -> None: ...

class DesiredReplicas(_message.Message):
    __slots__ = ("generation", "replicas")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaSpec]
    def __init__(self, generation: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaSpec, _Mapping]]] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("heartbeat_interval_ms",)
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("config", "desired", "logs")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    desired: DesiredReplicas
    logs: LogRequest
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., desired: _Optional[_Union[DesiredReplicas, _Mapping]] = ..., logs: _Optional[_Union[LogRequest, _Mapping]] = ...) -> None: ...

class GpuView(_message.Message):
    __slots__ = ("gpu", "memory_reserved", "memory_used_by_others", "memory_free")
    GPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RESERVED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BY_OTHERS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_FIELD_NUMBER: _ClassVar[int]
    gpu: Gpu
    memory_reserved: int
    memory_used_by_others: int
    memory_free: int
    def __init__(self, gpu: _Optional[_Union[Gpu, _Mapping]] = ..., memory_reserved: _Optional[int] = ..., memory_used_by_others: _Optional[int] = ..., memory_free: _Optional[int] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("at", "kind", "message")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    at: float
    kind: str
    message: str
    def __init__(self, at: _Optional[float] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "state", "inventory", "gpus", "last_heartbeat", "registered_at", "cordon_reason", "cordoned_by", "cordoned_at", "events")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    CORDON_REASON_FIELD_NUMBER: _ClassVar[int]
    CORDONED_BY_FIELD_NUMBER: _ClassVar[int]
    CORDONED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    inventory: Inventory
    gpus: _containers.RepeatedCompositeFieldContainer[GpuView]
    last_heartbeat: float
    registered_at: float
    cordon_reason: str
    cordoned_by: str
    cordoned_at: float
    events: _containers.RepeatedCompositeFieldContainer[NodeEvent]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., gpus: _Optional[_Iterable[_Union[GpuView, _Mapping]]] = ..., last_heartbeat: _Optional[float] = ..., registered_at: _Optional[float] = ..., cordon_reason: _Optional[str] = ..., cordoned_by: _Optional[str] = ..., cordoned_at: _Optional[float] = ..., events: _Optional[_Iterable[_Union[NodeEvent, _Mapping]]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DescribeNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class CapacityRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "largest")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    largest: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., largest: bool = ...) -> None: ...

class LargestFit(_message.Message):
    __slots__ = ("scope", "model", "quant", "engine", "tp", "nodes", "weights", "device")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    model: str
    quant: str
    engine: str
    tp: int
    nodes: _containers.RepeatedScalarFieldContainer[str]
    weights: int
    device: str
    def __init__(self, scope: _Optional[str] = ..., model: _Optional[str] = ..., quant: _Optional[str] = ..., engine: _Optional[str] = ..., tp: _Optional[int] = ..., nodes: _Optional[_Iterable[str]] = ..., weights: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class CapacityResponse(_message.Message):
    __slots__ = ("nodes", "gpu_count", "vram_total", "vram_reserved", "vram_free", "ram_total", "disk_free", "next_page_token", "nodes_total", "nodes_ready", "largest")
    NODES_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    VRAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    VRAM_RESERVED_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NODES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NODES_READY_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    gpu_count: int
    vram_total: int
    vram_reserved: int
    vram_free: int
    ram_total: int
    disk_free: int
    next_page_token: str
    nodes_total: int
    nodes_ready: int
    largest: _containers.RepeatedCompositeFieldContainer[LargestFit]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., gpu_count: _Optional[int] = ..., vram_total: _Optional[int] = ..., vram_reserved: _Optional[int] = ..., vram_free: _Optional[int] = ..., ram_total: _Optional[int] = ..., disk_free: _Optional[int] = ..., next_page_token: _Optional[str] = ..., nodes_total: _Optional[int] = ..., nodes_ready: _Optional[int] = ..., largest: _Optional[_Iterable[_Union[LargestFit, _Mapping]]] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("gpu_uuid", "gpu_index", "bytes")
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    gpu_uuid: str
    gpu_index: int
    bytes: int
    def __init__(self, gpu_uuid: _Optional[str] = ..., gpu_index: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "deployment", "ordinal", "node", "gpus", "state", "endpoint", "api_key", "gpu_memory_utilization", "tp", "message", "restarts", "ram_bytes", "generation", "observed", "over_reservation", "parts")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OVER_RESERVATION_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    deployment: str
    ordinal: int
    node: str
    gpus: _containers.RepeatedCompositeFieldContainer[Reservation]
    state: str
    endpoint: str
    api_key: str
    gpu_memory_utilization: float
    tp: int
    message: str
    restarts: int
    ram_bytes: int
    generation: int
    observed: ReplicaMemory
    over_reservation: bool
    parts: _containers.RepeatedCompositeFieldContainer[ReplicaPart]
    def __init__(self, id: _Optional[str] = ..., deployment: _Optional[str] = ..., ordinal: _Optional[int] = ..., node: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., state: _Optional[str] = ..., endpoint: _Optional[str] = ..., api_key: _Optional[str] = ..., gpu_memory_utilization: _Optional[float] = ..., tp: _Optional[int] = ..., message: _Optional[str] = ..., restarts: _Optional[int] = ..., ram_bytes: _Optional[int] = ..., generation: _Optional[int] = ..., observed: _Optional[_Union[ReplicaMemory, _Mapping]] = ..., over_reservation: bool = ..., parts: _Optional[_Iterable[_Union[ReplicaPart, _Mapping]]] = ...) -> None: ...

class ReplicaPart(_message.Message):
    __slots__ = ("rank", "node", "role", "gpus", "ram_bytes", "state", "address", "message", "restarts", "id")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    rank: int
    node: str
    role: str
    gpus: _containers.RepeatedCompositeFieldContainer[Reservation]
    ram_bytes: int
    state: str
    address: str
    message: str
    restarts: int
    id: str
    def __init__(self, rank: _Optional[int] = ..., node: _Optional[str] = ..., role: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., ram_bytes: _Optional[int] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., message: _Optional[str] = ..., restarts: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("weights", "kv_cache", "activations", "runtime", "total")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    weights: int
    kv_cache: int
    activations: int
    runtime: int
    total: int
    def __init__(self, weights: _Optional[int] = ..., kv_cache: _Optional[int] = ..., activations: _Optional[int] = ..., runtime: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "model", "quant", "engine", "context", "replicas_wanted", "replicas", "created_at", "device", "strategy", "state", "estimate", "tp", "source", "why", "observed", "observed_replicas", "reserved", "launch_notes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_WANTED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_NOTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    quant: str
    engine: str
    context: int
    replicas_wanted: int
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    created_at: float
    device: str
    strategy: str
    state: str
    estimate: Estimate
    tp: int
    source: str
    why: str
    observed: ReplicaMemory
    observed_replicas: int
    reserved: int
    launch_notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., quant: _Optional[str] = ..., engine: _Optional[str] = ..., context: _Optional[int] = ..., replicas_wanted: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., created_at: _Optional[float] = ..., device: _Optional[str] = ..., strategy: _Optional[str] = ..., state: _Optional[str] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., tp: _Optional[int] = ..., source: _Optional[str] = ..., why: _Optional[str] = ..., observed: _Optional[_Union[ReplicaMemory, _Mapping]] = ..., observed_replicas: _Optional[int] = ..., reserved: _Optional[int] = ..., launch_notes: _Optional[_Iterable[str]] = ...) -> None: ...

class PlaceRequest(_message.Message):
    __slots__ = ("model", "quant", "engine", "replicas", "context", "tp", "node", "gpu_type", "labels", "device", "strategy", "name", "dry_run", "max_moves", "explain", "trust_observed", "nodes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    MAX_MOVES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    TRUST_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    model: str
    quant: str
    engine: str
    replicas: int
    context: int
    tp: int
    node: str
    gpu_type: str
    labels: _containers.ScalarMap[str, str]
    device: str
    strategy: str
    name: str
    dry_run: bool
    max_moves: int
    explain: bool
    trust_observed: bool
    nodes: int
    def __init__(self, model: _Optional[str] = ..., quant: _Optional[str] = ..., engine: _Optional[str] = ..., replicas: _Optional[int] = ..., context: _Optional[int] = ..., tp: _Optional[int] = ..., node: _Optional[str] = ..., gpu_type: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., device: _Optional[str] = ..., strategy: _Optional[str] = ..., name: _Optional[str] = ..., dry_run: bool = ..., max_moves: _Optional[int] = ..., explain: bool = ..., trust_observed: bool = ..., nodes: _Optional[int] = ...) -> None: ...

class NodeVerdict(_message.Message):
    __slots__ = ("node", "feasible", "reason", "score", "gpus")
    NODE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    node: str
    feasible: bool
    reason: str
    score: int
    gpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node: _Optional[str] = ..., feasible: bool = ..., reason: _Optional[str] = ..., score: _Optional[int] = ..., gpus: _Optional[_Iterable[int]] = ...) -> None: ...

class PlaceResponse(_message.Message):
    __slots__ = ("placed", "deployment", "verdicts", "summary", "notes")
    PLACED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    placed: bool
    deployment: Deployment
    verdicts: _containers.RepeatedCompositeFieldContainer[NodeVerdict]
    summary: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, placed: bool = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ..., verdicts: _Optional[_Iterable[_Union[NodeVerdict, _Mapping]]] = ..., summary: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DescribeDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class CordonRequest(_message.Message):
    __slots__ = ("name", "reason", "uncordon")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNCORDON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    uncordon: bool
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., uncordon: bool = ...) -> None: ...

class CordonResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("deployment", "replica", "lines", "follow", "node")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    replica: int
    lines: int
    follow: bool
    node: str
    def __init__(self, deployment: _Optional[str] = ..., replica: _Optional[int] = ..., lines: _Optional[int] = ..., follow: bool = ..., node: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("replica_id", "node", "data")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    node: str
    data: bytes
    def __init__(self, replica_id: _Optional[str] = ..., node: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("nodes", "deadline_seconds", "force", "reason", "dry_run", "cancel", "status_only")
    NODES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_ONLY_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    deadline_seconds: float
    force: bool
    reason: str
    dry_run: bool
    cancel: bool
    status_only: bool
    def __init__(self, nodes: _Optional[_Iterable[str]] = ..., deadline_seconds: _Optional[float] = ..., force: bool = ..., reason: _Optional[str] = ..., dry_run: bool = ..., cancel: bool = ..., status_only: bool = ...) -> None: ...

class DrainMove(_message.Message):
    __slots__ = ("replica", "deployment", "to_node", "gpus")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    replica: str
    deployment: str
    to_node: str
    gpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, replica: _Optional[str] = ..., deployment: _Optional[str] = ..., to_node: _Optional[str] = ..., gpus: _Optional[_Iterable[int]] = ...) -> None: ...

class DrainBlocked(_message.Message):
    __slots__ = ("replica", "deployment", "reason")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    replica: str
    deployment: str
    reason: str
    def __init__(self, replica: _Optional[str] = ..., deployment: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainStatus(_message.Message):
    __slots__ = ("node", "state", "message", "moves", "blocked", "remaining", "node_state", "deadline", "started_at", "force")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    NODE_STATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    node: str
    state: str
    message: str
    moves: _containers.RepeatedCompositeFieldContainer[DrainMove]
    blocked: _containers.RepeatedCompositeFieldContainer[DrainBlocked]
    remaining: int
    node_state: str
    deadline: float
    started_at: float
    force: bool
    def __init__(self, node: _Optional[str] = ..., state: _Optional[str] = ..., message: _Optional[str] = ..., moves: _Optional[_Iterable[_Union[DrainMove, _Mapping]]] = ..., blocked: _Optional[_Iterable[_Union[DrainBlocked, _Mapping]]] = ..., remaining: _Optional[int] = ..., node_state: _Optional[str] = ..., deadline: _Optional[float] = ..., started_at: _Optional[float] = ..., force: bool = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("drains",)
    DRAINS_FIELD_NUMBER: _ClassVar[int]
    drains: _containers.RepeatedCompositeFieldContainer[DrainStatus]
    def __init__(self, drains: _Optional[_Iterable[_Union[DrainStatus, _Mapping]]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("requests_json",)
    REQUESTS_JSON_FIELD_NUMBER: _ClassVar[int]
    requests_json: str
    def __init__(self, requests_json: _Optional[str] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class ObservedRequest(_message.Message):
    __slots__ = ("model", "quant", "engine", "context", "tp", "gpu_type")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    quant: str
    engine: str
    context: int
    tp: int
    gpu_type: str
    def __init__(self, model: _Optional[str] = ..., quant: _Optional[str] = ..., engine: _Optional[str] = ..., context: _Optional[int] = ..., tp: _Optional[int] = ..., gpu_type: _Optional[str] = ...) -> None: ...

class ObservedResponse(_message.Message):
    __slots__ = ("replicas", "memory", "engine_versions", "gpu_types")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    memory: ReplicaMemory
    engine_versions: _containers.RepeatedScalarFieldContainer[str]
    gpu_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replicas: _Optional[int] = ..., memory: _Optional[_Union[ReplicaMemory, _Mapping]] = ..., engine_versions: _Optional[_Iterable[str]] = ..., gpu_types: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("heartbeats_total", "sessions_open", "uptime", "nodes", "nodes_alive", "controller", "duties")
    HEARTBEATS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    NODES_ALIVE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    DUTIES_FIELD_NUMBER: _ClassVar[int]
    heartbeats_total: int
    sessions_open: int
    uptime: float
    nodes: int
    nodes_alive: int
    controller: str
    duties: bool
    def __init__(self, heartbeats_total: _Optional[int] = ..., sessions_open: _Optional[int] = ..., uptime: _Optional[float] = ..., nodes: _Optional[int] = ..., nodes_alive: _Optional[int] = ..., controller: _Optional[str] = ..., duties: bool = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "at", "kind", "type", "node", "deployment", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: float
    kind: str
    type: str
    node: str
    deployment: str
    message: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[float] = ..., kind: _Optional[str] = ..., type: _Optional[str] = ..., node: _Optional[str] = ..., deployment: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("node", "deployment", "since", "after_id", "limit")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    node: str
    deployment: str
    since: float
    after_id: int
    limit: int
    def __init__(self, node: _Optional[str] = ..., deployment: _Optional[str] = ..., since: _Optional[float] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("nodes", "nodes_declared", "gpu_count", "gpus_free", "vram_total", "vram_reserved", "vram_free", "deployments", "deployments_serving", "deployments_degraded", "deployments_down", "deployments_declared", "replicas_wanted", "replicas_serving", "drains", "warnings", "uptime")
    class NodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODES_FIELD_NUMBER: _ClassVar[int]
    NODES_DECLARED_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FREE_FIELD_NUMBER: _ClassVar[int]
    VRAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    VRAM_RESERVED_FIELD_NUMBER: _ClassVar[int]
    VRAM_FREE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_SERVING_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_DOWN_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_DECLARED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_WANTED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_SERVING_FIELD_NUMBER: _ClassVar[int]
    DRAINS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.ScalarMap[str, int]
    nodes_declared: int
    gpu_count: int
    gpus_free: int
    vram_total: int
    vram_reserved: int
    vram_free: int
    deployments: int
    deployments_serving: int
    deployments_degraded: int
    deployments_down: int
    deployments_declared: int
    replicas_wanted: int
    replicas_serving: int
    drains: _containers.RepeatedCompositeFieldContainer[DrainStatus]
    warnings: _containers.RepeatedCompositeFieldContainer[Event]
    uptime: float
    def __init__(self, nodes: _Optional[_Mapping[str, int]] = ..., nodes_declared: _Optional[int] = ..., gpu_count: _Optional[int] = ..., gpus_free: _Optional[int] = ..., vram_total: _Optional[int] = ..., vram_reserved: _Optional[int] = ..., vram_free: _Optional[int] = ..., deployments: _Optional[int] = ..., deployments_serving: _Optional[int] = ..., deployments_degraded: _Optional[int] = ..., deployments_down: _Optional[int] = ..., deployments_declared: _Optional[int] = ..., replicas_wanted: _Optional[int] = ..., replicas_serving: _Optional[int] = ..., drains: _Optional[_Iterable[_Union[DrainStatus, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., uptime: _Optional[float] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ("id", "kind", "description", "created_at", "expires_at", "revoked", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    description: str
    created_at: float
    expires_at: float
    revoked: bool
    state: str
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked: bool = ..., state: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("ttl_seconds", "description")
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    description: str
    def __init__(self, ttl_seconds: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "join_token")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: JoinToken
    join_token: str
    def __init__(self, token: _Optional[_Union[JoinToken, _Mapping]] = ..., join_token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[JoinToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[JoinToken, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: JoinToken
    def __init__(self, token: _Optional[_Union[JoinToken, _Mapping]] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: bool = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ("name", "replicas_forgotten", "gpus_removed", "session_closed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    GPUS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SESSION_CLOSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas_forgotten: int
    gpus_removed: int
    session_closed: bool
    def __init__(self, name: _Optional[str] = ..., replicas_forgotten: _Optional[int] = ..., gpus_removed: _Optional[int] = ..., session_closed: bool = ...) -> None: ...

class ReplaceNodeRequest(_message.Message):
    __slots__ = ("name", "ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ReplaceNodeResponse(_message.Message):
    __slots__ = ("name", "join_token", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    join_token: str
    expires_at: float
    def __init__(self, name: _Optional[str] = ..., join_token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "created_at", "revoked", "role")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    created_at: float
    revoked: bool
    role: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., created_at: _Optional[float] = ..., revoked: bool = ..., role: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...
