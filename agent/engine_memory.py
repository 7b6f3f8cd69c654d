"""What an engine's log says about its own memory: weights, KV cache, activations, runtime.

Tolerant, versioned patterns: each term has the lines that releases of vLLM and llama.cpp have printed
for it, newest first; a line that is missing leaves its term at 0 (unknown), never an error. Figures are
per GPU (the largest over a replica's GPUs: vLLM logs once per worker, llama.cpp once per device) or, on
CPU, bytes of RAM. Pure: text in, numbers out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"

MIB = 2**20
GIB = 2**30
_UNIT = {"MiB": MIB, "MB": MIB, "GiB": GIB, "GB": GIB}  # vLLM's "GB" in older logs is GiB (it divides by 2**30)


@dataclass(frozen=True)
class LoggedMemory:
    weights: int = 0
    kv_cache: int = 0
    activations: int = 0
    runtime: int = 0

    @property
    def known(self) -> bool:
        return bool(self.weights or self.kv_cache or self.activations or self.runtime)


def _bytes(number: str, unit: str) -> int:
    return int(float(number.replace(",", "")) * _UNIT[unit])


# ---------------------------------------------------------------- llama.cpp

# "load_tensors:        CUDA0 model buffer size =  4403.49 MiB" (2025-), "llm_load_tensors: CUDA0 buffer size = ..."
# (2024), "llama_kv_cache: CUDA0 KV buffer size = ..." / "llama_kv_cache_init: ...", "sched_reserve: CUDA0
# compute buffer size = ..." / "llama_new_context_with_model: ...", "llama_context: CPU output buffer size".
# Function names change between releases ("init: CUDA2 KV buffer size" in 2025); the buffer kind does not.
_LLAMA_BUFFER = re.compile(
    r"(?P<fn>\w+)\s*:\s+(?P<dev>[A-Za-z_]+\d*)\s+(?P<what>model |KV |compute |output )?buffer size\s*="
    r"\s*(?P<n>[\d.]+)\s*(?P<unit>MiB|GiB)")
_HOST = ("CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host", "ROCm_Host", "Metal_Mapped")


def _term(fn: str, what: str) -> str | None:
    what = what.strip()
    if what == "model" or (not what and "load_tensors" in fn):  # 2024: "llm_load_tensors: CUDA0 buffer size"
        return "weights"
    return {"KV": "kv_cache", "compute": "activations", "output": "runtime"}.get(what)


def parse_llama_cpp(text: str) -> LoggedMemory:
    """Per device sums of llama.cpp's model, KV, compute and output buffers; the largest accelerator (a GPU
    replica), or the host's when there is none (a CPU replica)."""
    per: dict[str, dict[str, int]] = {}
    for m in _LLAMA_BUFFER.finditer(text):
        term = _term(m["fn"], m["what"] or "")
        if term is None:
            continue
        dev = per.setdefault(m["dev"], {})
        dev[term] = dev.get(term, 0) + _bytes(m["n"], m["unit"])
    gpus = {d: v for d, v in per.items() if d not in _HOST}
    if gpus:
        pick = {t: max(v.get(t, 0) for v in gpus.values()) for t in ("weights", "kv_cache", "activations", "runtime")}
    else:
        pick = {t: sum(v.get(t, 0) for v in per.values()) for t in ("weights", "kv_cache", "activations", "runtime")}
    return LoggedMemory(**pick)


# ---------------------------------------------------------------- vLLM

_VLLM_WEIGHTS = (
    re.compile(r"Model loading took (?P<n>[\d.]+)\s*(?P<unit>GiB|GB)"),          # V1 (0.8-), GPU
    re.compile(r"Loading model weights took (?P<n>[\d.]+)\s*(?P<unit>GiB|GB)"),  # V0 (-0.7)
    re.compile(r"Checkpoint size: (?P<n>[\d.]+)\s*(?P<unit>GiB)"),               # CPU build: the files it loads
)
_VLLM_KV = (
    re.compile(r"Available KV cache memory: (?P<n>-?[\d.]+)\s*(?P<unit>GiB|GB)"),     # GPU, V1
    re.compile(r"Explicitly set \((?P<n>[\d.]+)/[\d.]+\) (?P<unit>GiB) for KV cache"),  # CPU, 0.2x-
    re.compile(r"kv_cache_size=(?P<n>[\d.]+)(?P<unit>GiB)"),                          # V0 memory profiling
)
_VLLM_GRAPHS = re.compile(r"Graph capturing finished in [\d.]+ secs?, took (?P<n>[\d.]+)\s*(?P<unit>GiB|GB)")
_VLLM_PROFILE = re.compile(r"peak_torch_memory=(?P<peak>[\d.]+)GiB.*?non_torch_memory=(?P<nt>[\d.]+)GiB")


def _largest(patterns: tuple[re.Pattern[str], ...], text: str) -> int:
    for p in patterns:
        found = [_bytes(m["n"], m["unit"]) for m in p.finditer(text)]
        if found:
            return max(0, max(found))  # one line per worker at TP >= 2: they agree or the largest counts
    return 0


def parse_vllm(text: str) -> LoggedMemory:
    weights = _largest(_VLLM_WEIGHTS, text)
    kv = _largest(_VLLM_KV, text)
    runtime = max((_bytes(m["n"], m["unit"]) for m in _VLLM_GRAPHS.finditer(text)), default=0)
    activations = 0
    profile = list(_VLLM_PROFILE.finditer(text))
    if profile:
        peak = max(float(m["peak"]) for m in profile) * GIB
        activations = max(0, int(peak) - weights) if weights else 0
        runtime += int(max(float(m["nt"]) for m in profile) * GIB)
    return LoggedMemory(weights, kv, activations, runtime)


def parse(engine: str, text: str) -> LoggedMemory:
    if engine == LLAMA_CPP:
        return parse_llama_cpp(text)
    if engine == VLLM:
        return parse_vllm(text)
    return LoggedMemory()
