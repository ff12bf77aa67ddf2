"""``pods/<name>/exec`` over WebSockets, as the API server (and kubelet) serve it.

Protocol (KEP-3396, ``k8s.io/apimachinery/pkg/util/httpstream/wsstream``): the client upgrades a
``GET`` with ``Sec-WebSocket-Protocol`` listing ``v5.channel.k8s.io`` / ``v4.channel.k8s.io`` (the
first one the server supports wins; no match is refused). Every binary message starts with a
channel byte: 0 stdin (client to server), 1 stdout, 2 stderr, 3 error (one ``metav1.Status`` JSON
when the command ends: ``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and the exit code
in ``details.causes[reason=ExitCode]``), 4 resize (ignored: no TTY). v5 adds the CLOSE signal
(channel 255, payload = the channel to close) to end stdin.

Deviations, all stricter than a real cluster: no TTY (``tty=true`` is refused), no SPDY (kubectl
falls back to it only when the WebSocket upgrade is not offered), no ``channel.k8s.io``/v2/v3/base64
subprotocols. The process runs as the container's securityContext identity (``PodRuntime.spawn``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from sandbox.apiserver import errors

# (namespace, pod, container, argv, stdin) -> the started process; RuntimeError if not running
ExecStarter = Callable[[str, str, str, list[str], bool], "subprocess.Popen[bytes]"]

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_MESSAGE = 16 << 20
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exec_options(path: str) -> tuple[list[str], str | None, dict[str, bool]]:
    """``command`` (repeated), ``container`` and the stream flags of an exec URL.

    Raises:
        ApiError: 400 as the API server answers (no command, no stream, tty).
    """
    q = parse_qs(urlsplit(path).query, keep_blank_values=True)
    command = q.get("command") or []
    flags = {
        k: (q.get(k) or ["false"])[-1].lower() in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")
    }
    if not command:
        raise errors.bad_request("you must specify at least 1 command")
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise errors.bad_request("you must specify at least one of stdin, stdout, stderr")
    if flags["tty"]:
        raise errors.bad_request("the stateferry sandbox does not allocate a TTY for exec (use tty=false)")
    container = (q.get("container") or [""])[-1] or None
    return command, container, flags


def choose_protocol(headers: Any) -> str:
    """The negotiated subprotocol; a request without a WebSocket upgrade or with no supported
    subprotocol is refused with 400 (the sandbox has no SPDY)."""
    if (headers.get("Upgrade") or "").lower() != "websocket" or not headers.get("Sec-WebSocket-Key"):
        raise errors.bad_request("Upgrade request required")
    offered = [p.strip() for p in ",".join(headers.get_all("Sec-WebSocket-Protocol") or []).split(",")]
    for p in offered:
        if p in PROTOCOLS:
            return p
    raise errors.bad_request(
        "unable to upgrade connection: requested protocol(s) are not supported: "
        f"{offered}; supports {list(PROTOCOLS)}"
    )


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key.strip() + _GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def _read_exact(rfile: Any, n: int) -> bytes | None:
    data = rfile.read(n) if n else b""
    return data if data is not None and len(data) == n else None


def read_message(rfile: Any, on_control: Callable[[int, bytes], None]) -> tuple[int, bytes] | None:
    """The next data message ``(opcode, payload)`` from a client (fragments joined, pings answered
    through ``on_control``); None at EOF, a close frame or a protocol error (unmasked frame)."""
    parts: list[bytes] = []
    opcode = 0
    while True:
        head = _read_exact(rfile, 2)
        if head is None:
            return None
        fin, op, masked, n = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
        if n >= 126:
            ext = _read_exact(rfile, 2 if n == 126 else 8)
            if ext is None:
                return None
            n = int.from_bytes(ext, "big")
        if not masked or n > _MAX_MESSAGE:
            on_control(0x8, (1002 if not masked else 1009).to_bytes(2, "big"))
            return None
        mask = _read_exact(rfile, 4)
        data = _read_exact(rfile, n)
        if mask is None or data is None:
            return None
        if n:
            key = (mask * (n // 4 + 1))[:n]
            data = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        if op >= 0x8:  # control frames may come between fragments
            if op == 0x8:
                on_control(0x8, data[:2])
                return None
            if op == 0x9:
                on_control(0xA, data)
            continue
        if op:
            opcode = op
        parts.append(data)
        if fin:
            return opcode, b"".join(parts)


def exit_status(argv: list[str], code: int) -> dict[str, Any]:
    """The error channel's Status for an exit code (as the kubelet writes it)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: command '{' '.join(argv)}' exited with {code}: "
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def serve(handler: Any, starter: ExecStarter | None, ns: str, pod: dict[str, Any]) -> None:
    """Validate, upgrade and run one exec session on ``handler``'s connection.

    Raises:
        ApiError: before the upgrade (400 for bad options, an unknown container or a pod that
            does not run), answered as JSON by the caller.
    """
    name = pod["metadata"]["name"]
    argv, container, flags = exec_options(handler.path)
    containers = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None:
        if len(containers) != 1:
            raise errors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            )
        container = containers[0]
    if container not in containers:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    if not (pod.get("spec") or {}).get("nodeName"):
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    protocol = choose_protocol(handler.headers)
    if starter is None:
        raise errors.bad_request(f'unable to upgrade connection: container not found ("{container}")')
    try:
        proc = starter(ns, name, container, argv, flags["stdin"])
    except RuntimeError as exc:
        raise errors.bad_request(f"unable to upgrade connection: {exc}") from None
    handler.close_connection = True
    lock = threading.Lock()

    def send(opcode: int, payload: bytes) -> None:
        with lock, contextlib.suppress(OSError):
            handler.wfile.write(frame(opcode, payload))

    send_raw = handler.wfile.write
    send_raw(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(handler.headers['Sec-WebSocket-Key'])}\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()
    )

    def pump(stream: Any, channel: int, wanted: bool) -> None:
        for chunk in iter(lambda: os.read(stream.fileno(), 32768), b""):
            if wanted:
                send(0x2, bytes([channel]) + chunk)

    pumps = [
        threading.Thread(target=pump, args=(proc.stdout, STDOUT, flags["stdout"]), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, STDERR, flags["stderr"]), daemon=True),
    ]
    for t in pumps:
        t.start()
    client_gone = threading.Event()

    def reader() -> None:
        while True:
            msg = read_message(handler.rfile, send)
            if msg is None:
                break
            data = msg[1]
            if not data:
                continue
            if data[0] == STDIN and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(data[1:])
                    proc.stdin.flush()
            elif data[0] == CLOSE and protocol.startswith("v5") and data[1:2] == b"\x00" and proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        client_gone.set()
        if proc.poll() is None:  # the client went away: end the session's processes
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    threading.Thread(target=reader, daemon=True).start()
    code = proc.wait()
    for t in pumps:
        t.join(timeout=10)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    code = 128 - code if code < 0 else code  # killed by a signal: 128+N, as container runtimes report
    if not client_gone.is_set():
        send(0x2, bytes([ERROR]) + orjson.dumps(exit_status(argv, code)))
        send(0x8, (1000).to_bytes(2, "big"))
        client_gone.wait(5)
