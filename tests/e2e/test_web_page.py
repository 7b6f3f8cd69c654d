"""The operator console in a real browser: headless Chromium (Debian's package) against the controller's HTTP
app over a declared-GPU fleet, signed in with a viewer key; every node and GPU must be in the rendered DOM, a
person's clicks lead to a node and to a deployment, and the screenshots are kept under test-artifacts/ for a
person to look at."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.controller.store.schema import DeploymentRow, DrainRow, EventRow
from tests.e2e.cdp import Browser
from tests.integration.http_harness import DECLARED, GIB, HttpFleet, declared_fleet

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium() -> str:
    """Debian's chromium, installed on first use where we are root; skip with the reason otherwise."""
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if found:
        return str(found)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get): apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"chromium could not be installed ({' '.join(cmd)} exited {r.returncode}): {r.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no `chromium` is on PATH")
    return found


@pytest.fixture
def hf(tmp_path: Path) -> Iterator[HttpFleet]:
    f = HttpFleet(tmp_path / "ctl")
    declared_fleet(f)
    try:
        yield f
    finally:
        f.close()


def browse(browser: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,1000",
             # let the page's fetch + render run before the DOM or pixels are taken
             "--virtual-time-budget=5000"]
    return subprocess.run([browser, *flags, *extra, url], capture_output=True, text=True, timeout=120)


def signed_in(hf: HttpFleet) -> str:
    """The console is for readers only: a browser asks once (HTTP Basic), here the viewer key rides in the URL
    and the page's own requests for /api/capacity reuse it."""
    return f"http://viewer:{hf.viewer_key}@{hf.base.removeprefix('http://')}/"


def test_page_shows_every_node_and_gpu(hf: HttpFleet, tmp_path: Path) -> None:
    browser = chromium()
    started = time.monotonic()
    url = signed_in(hf)
    anonymous = browse(browser, hf.base + "/", tmp_path / "profile-anon", "--dump-dom")
    assert 'data-node="' not in anonymous.stdout
    dom = browse(browser, url, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-node="' in html, f"the page rendered no node; DOM:\n{html[:3000]}"
    for node, gpus in DECLARED.items():
        assert f'data-node="{node}"' in html, node
        for uuid, name, _ in gpus:
            assert f'data-uuid="{uuid}"' in html and uuid in html, uuid
            assert name in html, name
    # badges and deployments are drawn too
    for text in ('class="badge cordoned"', 'class="badge offline"', 'class="badge draining"', "bad fan",
                 'data-deployment="chat"', 'data-deployment="emb"'):
        assert text in html, text
    assert "cannot reach the controller" not in html or 'hidden=""' in html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "capacity-page.png"
    shot.unlink(missing_ok=True)
    r = browse(browser, url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert r.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    print(f"screenshot: {shot} ({shot.stat().st_size} bytes); both browser runs took "
          f"{time.monotonic() - started:.1f}s")


def console_rows(f: HttpFleet) -> None:
    """On top of the declared fleet: a drain of gpu-03 with a replica that cannot move (it needs an H100 and
    gpu-03 has the only one), and the events the controller would have recorded."""
    now = time.time()
    (h100, _, _) = DECLARED["gpu-03"][0]
    with f.store.session() as s:
        s.add(DeploymentRow(name="big", model="smollm2-135m", quant="q4_1", engine="llama.cpp", context=2048,
                            replicas_wanted=1, created_at=now, request=json.dumps({"gpu_type": "H100-80GB"})))
        s.add(DrainRow(node="gpu-03", state="active", started_at=now - 120, reason="firmware", by="tests",
                       message="big: blocked"))
        for kind, node, dep, message in (
                ("node.cordoned", "gpu-02", "", "bad fan (by tests)"),
                ("deployment.placed", "", "chat", "2 replica(s) on gpu-01: smollm2-135m q4_1 on llama.cpp"),
                ("replica.failed", "gpu-02", "emb", "emb-0: engine exited with code 1"),
                ("node.offline", "gpu-03", "", "")):
            s.add(EventRow(at=now - 60, kind=kind, node=node, deployment=dep, message=message))
        s.commit()
    f.add_replica("big-0", "big", "gpu-03", gpus=[(h100, 0, 2 * GIB)])


def test_console_click_through_to_a_node_and_a_deployment(hf: HttpFleet, tmp_path: Path) -> None:
    browser = chromium()
    console_rows(hf)
    ARTIFACTS.mkdir(exist_ok=True)

    async def visit() -> None:
        async with Browser(browser, tmp_path / "profile-cdp") as b:
            await b.goto(signed_in(hf))
            await b.wait("!!document.querySelector('#summary') && !!document.querySelector('[data-drain]')",
                         "the overview")
            drains = await b.text("[data-drain='gpu-03']")
            assert "big" in drains and "blocked" in drains and "none" in drains, drains  # no deadline
            events = await b.text("#events")
            assert "node.cordoned" in events and "bad fan" in events and "Warning" in events, events
            await b.screenshot(ARTIFACTS / "console-overview.png")

            await b.click("[data-node='gpu-01'] a.node-link")  # a person clicks the node's name
            await b.wait("document.querySelector('#detail')?.dataset.name === 'gpu-01'", "gpu-01's page")
            assert (await b.eval("location.hash")) == "#/node/gpu-01"
            detail = await b.text("#detail")
            for text in (*(u for u, _, _ in DECLARED["gpu-01"]), "REPLICAS ON THIS NODE", "chat", "starting"):
                assert text in detail, text  # (section titles are drawn in capitals)
            assert "emb" not in detail  # another node's replica is not listed here
            await b.screenshot(ARTIFACTS / "console-node.png")

            await b.click("#detail a[data-link-deployment='chat']")  # from the node to its deployment
            await b.wait("document.querySelector('#detail')?.dataset.name === 'chat'", "chat's page")
            detail = await b.text("#detail")
            for text in ("smollm2-135m q4_1 on llama.cpp", "1/1 serving", "healthy", "starting", "gpu-01",
                         "deployment.placed"):
                assert text in detail, text
            await b.screenshot(ARTIFACTS / "console-deployment.png")

            await b.click("#detail .crumb a")  # back to everything
            await b.wait("!!document.querySelector('#summary')", "the overview again")

    asyncio.run(visit())
    for name in ("console-overview.png", "console-node.png", "console-deployment.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000, name
