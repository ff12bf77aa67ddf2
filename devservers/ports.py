"""Free-port helpers for loopback servers."""

from __future__ import annotations

import socket
import threading

_lock = threading.Lock()
_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free now and was not handed out before by this process.

    Args:
        host: the loopback address the server will bind to.

    Returns:
        A port number.
    """
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            # Avoid ports whose +10000 sibling (gRPC convention of some servers) is out of range.
            if (host, port) in _handed_out or port > 55000:
                continue
            _handed_out.add((host, port))
            return port
    raise RuntimeError(f"no free TCP port found on {host}")


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Wait until something accepts TCP connections on ``host:port``.

    Returns:
        True when a connection succeeded within ``timeout`` seconds.
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
