"""The capacity page in a real browser: headless Chromium (Debian's package) against the controller's HTTP
app over a declared-GPU fleet, signed in with a viewer key; every node and GPU must be in the rendered DOM,
and the screenshot is kept under test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.http_harness import DECLARED, HttpFleet, declared_fleet

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


def test_page_shows_every_node_and_gpu(hf: HttpFleet, tmp_path: Path) -> None:
    browser = chromium()
    started = time.monotonic()
    # The page is for readers only: a browser asks once (HTTP Basic), here the viewer key rides in the URL
    # and the page's own request for /api/capacity reuses it.
    url = f"http://viewer:{hf.viewer_key}@{hf.base.removeprefix('http://')}/"
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
