"""The agent's launcher: controller ReplicaSpec + node config -> the engine command line."""

from __future__ import annotations

from pathlib import Path

from fleet.agent.launch import NodeEngines, make_launcher
from fleet.agent.probe import EngineInfo, GpuInfo
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
