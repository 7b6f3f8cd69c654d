"""Engine launchers: the exact argv/env per replica shape. Every flag used here is also checked
against the real engines' --help in tests/e2e/test_engine_flags.py (same specs, from SPECS below)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.agent.engines import (
    EngineConfig,
    Launch,
    LaunchError,
    ReplicaSpec,
    launch,
    vllm_multinode,
    vllm_quant_args,
)

A100_UUIDS = ("GPU-0a1b2c3d-0000-4000-8000-000000000001", "GPU-0a1b2c3d-0000-4000-8000-000000000002")
RTX4090_UUIDS = ("GPU-4090aaaa-0000-4000-8000-000000000001", "GPU-4090aaaa-0000-4000-8000-000000000002")

QWEN2_72B_AWQ_TP2 = ReplicaSpec(
    id="r-qwen-0", engine="vllm", served_name="qwen2-72b", model_path="Qwen/Qwen2-72B-Instruct-AWQ",
    port=8101, api_key="k-qwen", quant="awq", context=32768, device="gpu", gpu_uuids=A100_UUIDS,
    tp=2, gpu_memory_utilization=0.8125, compute_capability=8.0,
)
LLAMA31_70B_Q4KM_SPLIT = ReplicaSpec(
    id="r-llama-0", engine="llama.cpp", served_name="llama3.1-70b",
    model_path="/models/Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf", port=8102, api_key="k-llama",
    quant="q4_k_m", context=8192, device="gpu", gpu_uuids=RTX4090_UUIDS, tensor_split=(0.5, 0.5),
    compute_capability=8.9,
)
SMOLLM2_CPU = ReplicaSpec(
    id="r-smol-0", engine="llama.cpp", served_name="smollm2-135m",
    model_path="/models/SmolLM2-135M-Instruct.Q4_1.gguf", port=8103, api_key="k-smol", quant="q4_1",
    context=512, device="cpu",
)
TINY_VLLM_CPU = ReplicaSpec(
    id="r-tiny-0", engine="vllm", served_name="tiny-llama", model_path="/models/tiny-llama", port=8104,
    api_key="k-tiny", quant="bf16", context=256, device="cpu", kv_cache_bytes=64 * 1024**2,
)
QWEN25_7B_LONG_VLLM = ReplicaSpec(
    id="r-long-0", engine="vllm", served_name="qwen2.5-7b", model_path="Qwen/Qwen2.5-7B-Instruct", port=8105,
    api_key="k-long", quant="bf16", context=131072, device="gpu", gpu_uuids=A100_UUIDS[:1],
    gpu_memory_utilization=0.5, compute_capability=8.0, rope_scaling="yarn", rope_factor=4.0,
    rope_original_context=32768, rope_theta=1000000.0,
)
QWEN25_7B_LONG_LLAMA = ReplicaSpec(
    id="r-long-1", engine="llama.cpp", served_name="qwen2.5-7b", model_path="/models/qwen2.5-7b-instruct-q4_k_m.gguf",
    port=8106, api_key="k-long", quant="q4_k_m", context=131072, device="gpu", gpu_uuids=A100_UUIDS[:1],
    rope_scaling="yarn", rope_factor=4.0, rope_original_context=32768, rope_theta=1000000.0,
)
H100_A = tuple(f"GPU-a100000{i}-0000-4000-8000-00000000000{i}" for i in range(8))
H100_B = tuple(f"GPU-b100000{i}-0000-4000-8000-00000000000{i}" for i in range(8))
# deepseek-r1 fp8 over two 8×H100 nodes: TP 8 inside each node, one pipeline stage per node.
DEEPSEEK_RANK0 = ReplicaSpec(
    id="r-ds-0", engine="vllm", served_name="deepseek-r1", model_path="/models/DeepSeek-R1", port=8105,
    api_key="k-ds", quant="fp8", context=32768, device="gpu", gpu_uuids=H100_A, tp=8, gpu_memory_utilization=0.65,
    compute_capability=9.0, part="main", rank=0, nnodes=2, master_address="10.1.0.1:40001",
    bind_address="10.1.0.1", interface="eth1",
)
DEEPSEEK_RANK1 = ReplicaSpec(
    id="r-ds-0-part1", engine="vllm", served_name="deepseek-r1", model_path="/models/DeepSeek-R1", port=0,
    api_key="", quant="fp8", context=32768, device="gpu", gpu_uuids=H100_B, tp=8, gpu_memory_utilization=0.65,
    compute_capability=9.0, part="follower", rank=1, nnodes=2, master_address="10.1.0.1:40001",
    bind_address="10.1.0.2", interface="eth1",
)
# SmolLM2 over two CPU nodes: the main keeps 15 of 31 layer slots in its RAM, the rpc-server takes 16.
SMOLLM2_CPU_MAIN = ReplicaSpec(
    id="r-smol-1", engine="llama.cpp", served_name="smollm2-135m", model_path="/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    port=8106, api_key="k-smol", quant="q4_1", context=512, device="cpu", part="main", nnodes=2,
    peers=("10.1.0.2:40000",), gpu_layers=16, tensor_split=(1.0,),
)
SMOLLM2_RPC = ReplicaSpec(
    id="r-smol-1-part1", engine="llama.cpp", served_name="smollm2-135m", model_path="", port=40000, api_key="",
    context=512, device="cpu", part="rpc", rank=1, nnodes=2, bind_address="10.1.0.2",
)
# llama3.1-70b q4_k_m: 2 local GPUs on the main, 2 on the rpc node; rpc-server devices first in the split.
LLAMA70_GPU_MAIN = ReplicaSpec(
    id="r-l70-0", engine="llama.cpp", served_name="llama3.1-70b", model_path="/models/llama70.gguf", port=8107,
    api_key="k-l70", quant="q4_k_m", context=8192, device="gpu", gpu_uuids=RTX4090_UUIDS, part="main", nnodes=2,
    peers=("10.1.0.2:40000",), tensor_split=(0.25, 0.25, 0.25, 0.25), compute_capability=8.9,
)
CONFIG = EngineConfig(llama_server="/opt/llama/bin/llama-server", vllm="/opt/vllm/venv/bin/vllm",
                      rpc_server="/opt/llama/bin/rpc-server", vllm_version="0.32.0")

# (spec, config) pairs whose flags the e2e suite validates against the installed engines.
SPECS = {
    "qwen2-72b-awq-tp2-a100": QWEN2_72B_AWQ_TP2,
    "llama3.1-70b-q4km-2x4090": LLAMA31_70B_Q4KM_SPLIT,
    "smollm2-cpu": SMOLLM2_CPU,
    "tiny-vllm-cpu": TINY_VLLM_CPU,
    "qwen2.5-7b-131k-vllm": QWEN25_7B_LONG_VLLM,
    "qwen2.5-7b-131k-llama": QWEN25_7B_LONG_LLAMA,
    "deepseek-r1-fp8-tp8-pp2-rank0": DEEPSEEK_RANK0,
    "deepseek-r1-fp8-tp8-pp2-rank1": DEEPSEEK_RANK1,
    "smollm2-cpu-main-over-rpc": SMOLLM2_CPU_MAIN,
    "smollm2-rpc-server": SMOLLM2_RPC,
    "llama3.1-70b-gpu-main-over-rpc": LLAMA70_GPU_MAIN,
}


def test_context_beyond_native_launches_with_rope_scaling() -> None:
    import json

    llama = launch(QWEN25_7B_LONG_LLAMA, CONFIG).argv
    at = llama.index("--rope-scaling")
    assert llama[at:at + 6] == ["--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "32768"]
    vllm = launch(QWEN25_7B_LONG_VLLM, CONFIG).argv
    overrides = json.loads(vllm[vllm.index("--hf-overrides") + 1])
    assert overrides == {"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                             "original_max_position_embeddings": 32768, "rope_theta": 1000000.0},
                         "max_position_embeddings": 131072}
    assert vllm[vllm.index("--max-model-len") + 1] == "131072"
    assert "--rope-scaling" not in launch(SMOLLM2_CPU, CONFIG).argv


def test_vllm_qwen2_72b_awq_tp2_on_two_a100() -> None:
    assert launch(QWEN2_72B_AWQ_TP2, CONFIG) == Launch(
        argv=[
            "/opt/vllm/venv/bin/vllm", "serve", "Qwen/Qwen2-72B-Instruct-AWQ",
            "--host", "0.0.0.0", "--port", "8101",
            "--served-model-name", "qwen2-72b",
            "--tensor-parallel-size", "2",
            "--max-model-len", "32768",
            "--gpu-memory-utilization", "0.8125",
            "--quantization", "awq_marlin",
        ],
        env={"CUDA_VISIBLE_DEVICES": ",".join(A100_UUIDS), "VLLM_API_KEY": "k-qwen"},
    )


def test_llama_server_llama31_70b_q4km_split_across_two_4090() -> None:
    assert launch(LLAMA31_70B_Q4KM_SPLIT, CONFIG) == Launch(
        argv=[
            "/opt/llama/bin/llama-server",
            "-m", "/models/Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf",
            "--host", "0.0.0.0", "--port", "8102",
            "-c", "8192",
            "-ngl", "999",
            "--tensor-split", "0.5,0.5",
            "--alias", "llama3.1-70b",
            "--api-key-file", "api-key",
        ],
        env={"CUDA_VISIBLE_DEVICES": ",".join(RTX4090_UUIDS), "LLAMA_ARG_LOG_VERBOSITY": "4"},
        files={"api-key": "k-llama\n"},
    )


def test_llama_server_on_cpu_offloads_nothing_and_hides_gpus() -> None:
    assert launch(SMOLLM2_CPU, CONFIG) == Launch(
        argv=[
            "/opt/llama/bin/llama-server", "-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "--host", "0.0.0.0", "--port", "8103", "-c", "512", "-ngl", "0",
            "--alias", "smollm2-135m", "--api-key-file", "api-key",
        ],
        env={"CUDA_VISIBLE_DEVICES": "", "LLAMA_ARG_LOG_VERBOSITY": "4"},
        files={"api-key": "k-smol\n"},
    )


def test_vllm_on_cpu_gives_kv_size_runs_eager_in_one_process() -> None:
    config = EngineConfig(vllm="vllm", host="127.0.0.1", offline=True, vllm_cache_root="/var/lib/fleet/vllm-cache/")
    assert launch(TINY_VLLM_CPU, config) == Launch(
        argv=[
            "vllm", "serve", "/models/tiny-llama", "--host", "127.0.0.1", "--port", "8104",
            "--served-model-name", "tiny-llama", "--tensor-parallel-size", "1", "--max-model-len", "256",
            "--kv-cache-memory-bytes", "67108864", "--enforce-eager",
            "--dtype", "bfloat16",
        ],
        env={
            "VLLM_API_KEY": "k-tiny",
            "CUDA_VISIBLE_DEVICES": "",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "HF_HUB_OFFLINE": "1",
            "VLLM_CACHE_ROOT": "/var/lib/fleet/vllm-cache/r-tiny-0",
        },
    )


def test_single_gpu_llama_server_has_no_tensor_split_and_extra_args_go_last() -> None:
    spec = ReplicaSpec(id="r", engine="llama.cpp", served_name="m", model_path="/m.gguf", port=1, api_key="k",
                       gpu_uuids=("GPU-x",), tensor_split=(1.0,))
    config = EngineConfig(llama_extra_args=("--flash-attn", "on"))
    out = launch(spec, config)
    assert "--tensor-split" not in out.argv
    assert out.argv[-2:] == ["--flash-attn", "on"]
    assert out.env == {"CUDA_VISIBLE_DEVICES": "GPU-x", "LLAMA_ARG_LOG_VERBOSITY": "4"}


@pytest.mark.parametrize(
    ("quant", "cc", "cpu", "expected"),
    [
        ("awq", 8.0, False, ["--quantization", "awq_marlin"]),
        ("awq", 7.5, False, ["--quantization", "awq"]),
        ("awq", 0.0, True, ["--quantization", "awq"]),
        ("gptq", 8.6, False, ["--quantization", "gptq_marlin"]),
        ("gptq-int8", 8.9, False, ["--quantization", "gptq_marlin"]),
        ("gptq-int8", 7.0, False, ["--quantization", "gptq"]),
        ("fp8", 8.9, False, ["--quantization", "fp8"]),
        ("bf16", 8.0, False, ["--dtype", "bfloat16"]),
        ("fp16", 7.0, False, ["--dtype", "float16"]),
        ("int8", 8.0, False, []),      # compressed-tensors, read from the checkpoint's config
        ("", 8.0, False, []),
    ],
)
def test_vllm_quant_mapping(quant: str, cc: float, cpu: bool, expected: list[str]) -> None:
    assert vllm_quant_args(quant, cc, cpu) == expected


@pytest.mark.parametrize(
    "spec",
    [
        ReplicaSpec(id="r", engine="vllm", served_name="m", model_path="m", port=1, api_key="k", quant="q4_k_m",
                    gpu_uuids=("GPU-x",), gpu_memory_utilization=0.5),
        ReplicaSpec(id="r", engine="vllm", served_name="m", model_path="m", port=1, api_key="k", device="cpu"),
        ReplicaSpec(id="r", engine="vllm", served_name="m", model_path="m", port=1, api_key="k", gpu_uuids=("G",)),
        ReplicaSpec(id="r", engine="llama.cpp", served_name="m", model_path="m", port=1, api_key="k",
                    gpu_uuids=("A", "B"), tensor_split=(1.0, 1.0, 1.0)),
        ReplicaSpec(id="r", engine="tgi", served_name="m", model_path="m", port=1, api_key="k"),
    ],
    ids=["gguf-on-vllm", "vllm-cpu-without-kv", "vllm-gpu-without-utilization", "split-mismatch", "unknown"],
)
def test_specs_that_cannot_launch_say_why(spec: ReplicaSpec) -> None:
    with pytest.raises(LaunchError):
        launch(spec)



@pytest.mark.parametrize("case", sorted(SPECS))
def test_the_api_key_is_never_on_the_command_line(case: str) -> None:
    spec = SPECS[case]
    out = launch(spec, CONFIG)
    if spec.part in ("rpc", "follower"):  # a part that serves no HTTP has no key at all
        assert "--api-key" not in out.argv and "VLLM_API_KEY" not in out.env and not out.files
        return
    assert spec.api_key not in " ".join(out.argv) and "--api-key" not in out.argv
    # llama-server reads it from the file the supervisor writes; vLLM from its environment
    assert [spec.api_key + "\n"] == list(out.files.values()) or out.env["VLLM_API_KEY"] == spec.api_key


# ---------------------------------------------------------------- parts of multi-node replicas


def test_vllm_multinode_rank0_serves_http_and_holds_the_rendezvous() -> None:
    out = launch(DEEPSEEK_RANK0, CONFIG)
    assert out.argv == [
        "/opt/vllm/venv/bin/vllm", "serve", "/models/DeepSeek-R1",
        "--host", "0.0.0.0", "--port", "8105",
        "--served-model-name", "deepseek-r1",
        "--tensor-parallel-size", "8",
        "--max-model-len", "32768",
        "--pipeline-parallel-size", "2", "--nnodes", "2", "--node-rank", "0",
        "--master-addr", "10.1.0.1", "--master-port", "40001", "--distributed-executor-backend", "mp",
        "--gpu-memory-utilization", "0.6500",
        "--quantization", "fp8",
    ]
    assert out.env == {"CUDA_VISIBLE_DEVICES": ",".join(H100_A), "VLLM_HOST_IP": "10.1.0.1",
                       "NCCL_SOCKET_IFNAME": "eth1", "GLOO_SOCKET_IFNAME": "eth1", "VLLM_API_KEY": "k-ds"}


def test_vllm_multinode_rank1_is_headless_without_http() -> None:
    out = launch(DEEPSEEK_RANK1, CONFIG)
    assert out.argv == [
        "/opt/vllm/venv/bin/vllm", "serve", "/models/DeepSeek-R1",
        "--served-model-name", "deepseek-r1",
        "--tensor-parallel-size", "8",
        "--max-model-len", "32768",
        "--pipeline-parallel-size", "2", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "10.1.0.1", "--master-port", "40001", "--distributed-executor-backend", "mp",
        "--headless",
        "--gpu-memory-utilization", "0.6500",
        "--quantization", "fp8",
    ]
    assert out.env["VLLM_HOST_IP"] == "10.1.0.2" and out.env["CUDA_VISIBLE_DEVICES"] == ",".join(H100_B)
    assert "VLLM_API_KEY" not in out.env  # it serves no HTTP


@pytest.mark.parametrize(("version", "ok"), [("0.11.1", True), ("0.32.0+cpu", True), ("0.11.0", False),
                                             ("0.10.2", False), ("1.0", True), ("", False)])
def test_vllm_below_0_11_1_is_refused_clearly(version: str, ok: bool) -> None:
    assert (vllm_multinode(version) is None) is ok
    config = EngineConfig(vllm="vllm", vllm_version=version)
    if ok:
        assert "--nnodes" in launch(DEEPSEEK_RANK0, config).argv
    else:
        with pytest.raises(LaunchError, match="across nodes|version"):
            launch(DEEPSEEK_RANK0, config)


def test_llama_cpp_main_on_cpu_keeps_its_share_and_dials_the_rpc_servers() -> None:
    out = launch(SMOLLM2_CPU_MAIN, CONFIG)
    assert out.argv == [
        "/opt/llama/bin/llama-server", "-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "--host", "0.0.0.0", "--port", "8106", "-c", "512", "-ngl", "16",
        "--rpc", "10.1.0.2:40000",
        "--alias", "smollm2-135m", "--api-key-file", "api-key",
    ]
    assert out.env["CUDA_VISIBLE_DEVICES"] == ""


def test_llama_cpp_main_on_gpus_splits_over_rpc_devices_then_its_own() -> None:
    out = launch(LLAMA70_GPU_MAIN, CONFIG)
    i = out.argv.index("--rpc")
    assert out.argv[i:i + 4] == ["--rpc", "10.1.0.2:40000", "--tensor-split", "0.25,0.25,0.25,0.25"]
    assert out.argv[out.argv.index("-ngl") + 1] == "999"


def test_rpc_server_binds_only_to_the_advertised_address() -> None:
    out = launch(SMOLLM2_RPC, CONFIG)
    assert out == Launch(["/opt/llama/bin/rpc-server", "-H", "10.1.0.2", "-p", "40000"], {"CUDA_VISIBLE_DEVICES": ""})
    for bad in ("", "0.0.0.0"):
        with pytest.raises(LaunchError, match="advertised address"):
            launch(replace(SMOLLM2_RPC, bind_address=bad), CONFIG)


def test_vllm_cpu_parts_are_refused() -> None:
    with pytest.raises(LaunchError, match="one node"):
        launch(replace(TINY_VLLM_CPU, part="main", nnodes=2, master_address="h:1"), CONFIG)
