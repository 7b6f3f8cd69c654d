"""The README's tour, run as written (bash), with a real llama-server: every step succeeds in order, no step
undoes the one after it, and the stop step leaves nothing running.

Only what cannot be the same on a test machine is changed: the tour's directories become temporary ones, its
two ports become free ones (CI holds 8080 and 50051 on purpose), and after the agents start the script waits
until both nodes are ready (a person reading the output does that by eye).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fleet.agent import engine_install as ei
from tests.integration.harness import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def tour_script() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## A 5-minute tour\s+```bash\n(.*?)```", readme, re.S)
    assert block, "README has a tour block"
    return block.group(1)


def test_examples_named_by_the_tour_exist() -> None:
    for path in re.findall(r"examples/[\w.-]+", tour_script()):
        assert (REPO / path).is_file(), path


def test_the_readme_tour_runs_as_written(tmp_path: Path, llama_server_path: Path) -> None:
    script = tour_script()
    ready = ("until [ \"$(fleet nodes -o json | python -c 'import json,sys; "
             "print(sum(n[\"state\"] == \"ready\" for n in json.load(sys.stdin)))')\" = 2 ]; do sleep 0.3; done\n")
    assert "# 3. look" in script
    script = script.replace("# 3. look", ready + "# 3. look")
    script = (script.replace(". .venv/bin/activate", f"export PATH={Path(sys.executable).parent}:$PATH")
              .replace("/tmp/fleet", str(tmp_path / "fleet")).replace("/tmp/smol", str(tmp_path / "smol"))
              .replace("127.0.0.1:50051", f"127.0.0.1:{free_port()}")
              .replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    cache = llama_server_path.parents[3]  # <cache>/llama.cpp/<version>/bin/llama-server
    assert ei.cached_engine(cache, ei.LLAMA_CPP) is not None, "step 0 must find the session's build"
    env["FLEET_ENGINES_DIR"] = str(cache)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        # whatever the tour left behind (nothing, when it passes) goes with its process group
        for p in psutil.process_iter(["environ", "cmdline"]):
            try:
                if str(tmp_path) in " ".join(p.info["cmdline"] or []):
                    p.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log = tmp_path / "fleet"
    assert proc.returncode == 0, out[-6000:] + "".join(
        f"\n--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(log.glob("*.log")))
    for text in ("placed qwen2-72b-awq", "placed smollm2-135m-q4-1", "join token 2 revoked", "node gpu-01 removed",
                 "declared node (planning only)", "cannot move", "node.cordoned"):
        assert text in out, text
    start = out.find('{"object": "list"')  # curl's answer (no newline after it)
    assert start >= 0, out[-3000:]
    models, _ = json.JSONDecoder().raw_decode(out, start)
    assert [m["id"] for m in models["data"]] == ["smollm2-135m-q4-1"], "only what serves, not the declared replica"
    # the stop step stopped the engine: no replica state left with a live pid
    for state in (tmp_path / "fleet" / "a1" / "replicas").glob("*/state.json"):
        pid = json.loads(state.read_text()).get("pid")
        assert not (pid and psutil.pid_exists(pid)), f"engine {pid} still running after the stop step"
