"""Several "hosts" on one machine for multi-node tests: network namespaces joined by a bridge.

Each host is a network namespace with one veth into a bridge in the root namespace; the controller (and the
gateway's clients) stay in the root namespace on the bridge's address. Everything is created under names
unique to the test run and removed afterwards. Where namespaces cannot be made (not root, no iproute2), the
hosts fall back to distinct loopback addresses (127.0.0.x) in the root namespace, and say so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Hosts:
    """Where each host's processes run (`wrap` prefixes its command line) and the address it has."""

    controller_address: str
    addresses: dict[str, str]
    wraps: dict[str, tuple[str, ...]]
    isolated: bool  # True: namespaces; False: loopback addresses in the root namespace
    _cleanup: list[list[str]] = field(default_factory=list)

    def close(self) -> None:
        for argv in reversed(self._cleanup):
            subprocess.run(argv, capture_output=True, check=False)
        self._cleanup.clear()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def namespaces_available() -> str:
    """"" when this process can make network namespaces, else why not."""
    if os.environ.get("FLEET_TEST_NO_NETNS"):
        return "FLEET_TEST_NO_NETNS is set"
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no iproute2 (`ip`)"
    probe = f"flprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"`ip netns add` failed: {getattr(e, 'stderr', '') or e}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return ""


def make_hosts(names: list[str]) -> Hosts:
    why = namespaces_available()
    if why:
        print(f"\n[multi-node e2e] network namespaces unavailable ({why}): FALLING BACK to loopback addresses "
              "127.0.0.x in one namespace; the parts are not on separate network stacks", flush=True)
        return Hosts("127.0.0.1", {n: f"127.0.0.{i + 2}" for i, n in enumerate(names)}, {n: () for n in names},
                     isolated=False)
    tag = secrets.token_hex(2)
    # 10.200-249.x.0/24, picked per run: two test runs on one machine never share a subnet by accident.
    subnet = f"10.{200 + int(tag, 16) % 50}.{int(tag, 16) % 250}"
    bridge = f"flbr{tag}"
    hosts = Hosts(f"{subnet}.1", {}, {}, isolated=True)
    try:
        _ip("link", "add", bridge, "type", "bridge")
        hosts._cleanup.append(["ip", "link", "delete", bridge])
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, name in enumerate(names):
            ns, host_end, ns_end = f"fl{tag}{name}", f"flv{tag}{i}", f"flp{tag}{i}"
            _ip("netns", "add", ns)
            hosts._cleanup.append(["ip", "netns", "delete", ns])
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            hosts._cleanup.append(["ip", "link", "delete", host_end])
            _ip("link", "set", host_end, "master", bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", ns_end, "netns", ns)
            address = f"{subnet}.{i + 2}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            hosts.addresses[name] = address
            hosts.wraps[name] = ("ip", "netns", "exec", ns)
    except BaseException:
        hosts.close()
        raise
    print(f"\n[multi-node e2e] hosts in network namespaces on bridge {bridge}: "
          + ", ".join(f"{n}={a}" for n, a in hosts.addresses.items()), flush=True)
    return hosts
