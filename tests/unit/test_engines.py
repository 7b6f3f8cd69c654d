"""Engine launchers: the exact argv/env per replica shape. Every flag used here is also checked
against the real engines' --help in tests/e2e/test_engine_flags.py (same specs, from SPECS below)."""

from __future__ import annotations

import pytest

from fleet.agent.engines import (
    EngineConfig,
    Launch,
    LaunchError,
    ReplicaSpec,
    launch,
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
CONFIG = EngineConfig(llama_server="/opt/llama/bin/llama-server", vllm="/opt/vllm/venv/bin/vllm")

# (spec, config) pairs whose flags the e2e suite validates against the installed engines.
SPECS = {
    "qwen2-72b-awq-tp2-a100": QWEN2_72B_AWQ_TP2,
    "llama3.1-70b-q4km-2x4090": LLAMA31_70B_Q4KM_SPLIT,
    "smollm2-cpu": SMOLLM2_CPU,
    "tiny-vllm-cpu": TINY_VLLM_CPU,
    "qwen2.5-7b-131k-vllm": QWEN25_7B_LONG_VLLM,
    "qwen2.5-7b-131k-llama": QWEN25_7B_LONG_LLAMA,
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
    assert spec.api_key not in " ".join(out.argv) and "--api-key" not in out.argv
    # llama-server reads it from the file the supervisor writes; vLLM from its environment
    assert [spec.api_key + "\n"] == list(out.files.values()) or out.env["VLLM_API_KEY"] == spec.api_key
