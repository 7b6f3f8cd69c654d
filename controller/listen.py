"""Can this process listen on HOST:PORT? Asked before the controller writes or starts anything.

A port another process holds is the most common first-start failure (a second controller, or anything on
8080). Binding a plain socket first turns it into one line that names the flag to change, instead of a
gRPC core log line, a traceback, or a half-started controller.
"""

from __future__ import annotations

import errno
import socket


def split_address(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080", "[::1]:8080", ":8080" (every interface) -> host, port; ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"want HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def listen_problem(listen: str) -> str | None:
    """Why `listen` cannot be bound now (in words), or None when it can. Port 0 (any free port) always can."""
    try:
        host, port = split_address(listen)
    except ValueError as e:
        return str(e)
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            # Like the servers themselves: a port in TIME_WAIT is free, a port someone listens on is not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return "the address is already in use (another process listens there)"
                return e.strerror or str(e)
    return None
