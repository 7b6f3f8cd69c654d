"""The agent's launcher: controller ReplicaSpec + node config -> the engine command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.agent.launch import NodeEngines, make_launcher
from fleet.agent.probe import EngineInfo, GpuInfo
from fleet.agent.supervisor import LaunchError
from fleet.proto import fleet_pb2 as pb


def test_node_flags_gpu_pinning_and_weights(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.Q4_K_M.gguf").write_bytes(b"GGUF")
    gpus = (GpuInfo("GPU-a", 0, "RTX4090", 24 << 30, 0, "8.9"), GpuInfo("GPU-b", 1, "RTX4090", 24 << 30, 0, "8.9"))
    node = NodeEngines(installed=(EngineInfo("llama.cpp", "1", "/opt/llama-server"),), gpus=gpus, models_dir=models,
                       replicas_dir=tmp_path / "replicas", llama_extra_args=("--flash-attn", "on"))
    spec = pb.ReplicaSpec(id="r1", deployment="chat", engine="llama.cpp", quant="q4_k_m", source="org/m-GGUF",
                          file="m.Q4_K_M.gguf", gpu_uuids=["GPU-a", "GPU-b"], context=4096, api_key="k",
                          tensor_split=[0.5, 0.5], device="gpu")
    launch = make_launcher(node)(spec, 41001, "0.0.0.0")
    argv = launch.argv
    assert argv[0] == "/opt/llama-server" and argv[argv.index("-m") + 1] == str(models / "m.Q4_K_M.gguf")
    assert argv[-2:] == ["--flash-attn", "on"]  # the node's extra flags come last
    assert argv[argv.index("--tensor-split") + 1] == "0.5,0.5"
    key_file = argv[argv.index("--api-key-file") + 1]
    assert key_file == str(tmp_path / "replicas" / "r1" / "api-key") and launch.files == {key_file: "k\n"}
    assert "k" not in argv
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    assert "NOTIFY_SOCKET" not in launch.env and len(launch.env["TMPDIR"]) < 60  # vLLM IPC paths stay short


def rpc_part(tmp_path: Path, address: str, allow_public: bool = False, rpc_server: str = "/opt/rpc-server") -> object:
    node = NodeEngines(installed=(EngineInfo("llama.cpp", "1", "/opt/llama-server", multinode=True,
                                             rpc_server=rpc_server),), gpus=(), models_dir=tmp_path,
                       replicas_dir=tmp_path / "replicas", advertise_address=address, allow_public_rpc=allow_public)
    spec = pb.ReplicaSpec(id="r1-part1", deployment="chat", engine="llama.cpp", device="cpu",
                          part=pb.PartSpec(replica_id="r1", rank=1, role="rpc", nnodes=2))
    return make_launcher(node)(spec, 41002, "0.0.0.0")


@pytest.mark.parametrize(("address", "allow", "refused"), [
    ("10.1.2.3", False, None),
    ("192.168.7.9", False, None),
    ("8.8.4.4", False, "public address"),          # rpc-server has no authentication
    ("8.8.4.4", True, None),                        # the operator opted in (--allow-public-rpc)
    ("", False, "advertised address"),
    ("node-b.internal", False, "IPv4 address only"),  # rpc-server parses an IPv4 literal
    ("fd00::2", False, "IPv4 address only"),
])
def test_rpc_server_binds_the_advertised_address_and_refuses_public_ones(tmp_path: Path, address: str, allow: bool,
                                                                          refused: str | None) -> None:
    if refused:
        with pytest.raises(LaunchError, match=refused):
            rpc_part(tmp_path, address, allow)
        return
    launch = rpc_part(tmp_path, address, allow)
    assert launch.argv == ["/opt/rpc-server", "-H", address, "-p", "41002"]  # type: ignore[attr-defined]


def test_no_rpc_server_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="fleet engine install llama.cpp"):
        rpc_part(tmp_path, "10.1.2.3", rpc_server="")


def test_which_engines_a_node_offers_for_parts() -> None:
    from fleet.controller.store.mirror import multinode_engines

    engines = [{"name": "llama.cpp", "multinode": True}, {"name": "vllm", "multinode": True}]
    assert multinode_engines({"advertiseAddress": "10.0.0.5", "engines": engines}) == {"llama.cpp", "vllm"}
    assert multinode_engines({"engines": engines}) == frozenset()  # nowhere for the other parts to dial
    assert multinode_engines({"advertiseAddress": "8.8.4.4", "engines": engines}) == {"vllm"}
    assert multinode_engines({"advertiseAddress": "8.8.4.4", "allowPublicRpc": True, "engines": engines}) == {
        "llama.cpp", "vllm"}
    assert multinode_engines({"advertiseAddress": "10.0.0.5", "engines": [{"name": "vllm"}]}) == frozenset()
