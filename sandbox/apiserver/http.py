"""The HTTP front end: routing of Kubernetes REST paths onto the registry and discovery (watch streams:
watch.py; binding, eviction and finalize: subresources.py; exec: wsexec.py)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import yaml

from sandbox.apiserver import discovery, errors, fieldmanager, openapi, protobuf, watch, wsexec
from sandbox.apiserver.deletion import DeleteOptions
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.listing import list_objects
from sandbox.apiserver.registry import Registry
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj
from sandbox.apiserver.subresources import extra_sub, finalize_namespace, pod_action
from sandbox.apiserver.tables import resource_table

log = logging.getLogger(__name__)

_JSON = "application/json"


# (namespace, pod, container, tailLines, previous) -> log text, or None while the container has not started
LogReader = Callable[[str, str, str, int | None, bool], str | None]
ExecStarter = wsexec.ExecStarter


class Server(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server bound to one loopback address."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], registry: Registry) -> None:
        super().__init__(addr, Handler)
        self.registry = registry
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.log_reader: LogReader | None = None
        self.exec_starter: ExecStarter | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept with TCP_NODELAY (small JSON answers must not wait for delayed ACKs)."""
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        """Forget a finished connection."""
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open connection, watches and idle keep-alive ones alike (server stop): a
        stopped server must not go on answering on connections a client pool kept open."""
        with self.connections_lock:
            for s in list(self.connections):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """One connection; requests are answered with a single write each."""

    protocol_version = "HTTP/1.1"
    server: Server
    server_version = "stateferry-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    # ---- plumbing ----------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str = _JSON) -> None:
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'OK')}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Cache-Control: no-cache, private\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, orjson.dumps(obj))

    def _error(self, exc: ApiError) -> None:
        if exc.plain is not None:
            self._send(exc.code, exc.plain.encode(), "text/plain; charset=utf-8")
        else:
            self._json(exc.code, exc.status())

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parsed_body(self, raw: bytes) -> Any:
        if not raw.strip():
            return None
        ctype = (self.headers.get("Content-Type") or _JSON).split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    f"application/json, application/yaml ({exc})",
                ) from None
        if ctype in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(raw.decode())
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    def do_GET(self) -> None:
        """GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """PUT."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """PATCH."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        raw = self._body()
        try:
            self._route(method, raw)
        except ApiError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error on %s %s", method, self.path)
            self._json(500, ApiError(500, "InternalError", f"Internal error occurred: {exc}").status())

    # ---- routing -----------------------------------------------------------------------------------
    def _route(self, method: str, raw: bytes) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        reg = self.server.registry
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            self._json(200, discovery.VERSION_INFO)
            return
        if path.startswith("/openapi/"):
            code, body, ctype = openapi.serve(reg, path, q)
            self._send(code, body, ctype)
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api":
            if len(parts) == 1:
                self._json(
                    200,
                    discovery.api_versions(
                        f"{self.server.server_address[0]!s}:{self.server.server_address[1]}"
                    ),
                )
                return
            if parts[1] != "v1":
                raise errors.page_not_found()
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                self._json(200, discovery.api_group_list(reg))
                return
            group = parts[1]
            if group not in reg.groups:
                raise errors.page_not_found()
            if len(parts) == 2:
                self._json(200, discovery.api_group(reg, group))
                return
            version, rest = parts[2], parts[3:]
            if version not in reg.groups[group]:
                raise errors.server_could_not_find()
        else:
            raise errors.page_not_found()
        if not rest:
            doc = discovery.resource_list(reg, group, version)
            if doc is None:
                raise errors.page_not_found()
            self._json(200, doc)
            return
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        rt = reg.type_for(group, version, rest[0])
        if rt is None or (ns is not None and not rt.namespaced):
            raise errors.server_could_not_find()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (sub is not None and sub not in rt.subresources and not extra_sub(rt, sub)):
            raise errors.server_could_not_find()
        if rt.namespaced and name is not None and ns is None:
            raise errors.server_could_not_find()
        if rt.key == ("", "pods") and sub == "exec" and ns is not None and name is not None:
            if method not in ("GET", "POST"):
                raise errors.method_not_allowed(method)
            wsexec.serve(self, self.server.exec_starter, ns, reg.get(rt, ns, name))
            return
        self._resource(method, rt, ns, name, sub, q, raw)

    def _resource(
        self,
        method: str,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
        q: dict[str, str],
        raw: bytes,
    ) -> None:
        reg = self.server.registry
        dry_run = q.get("dryRun") == "All"
        strict = q.get("fieldValidation", "") == "Strict"
        # managerOrUserAgent: who an Update entry of managedFields names
        manager = q.get("fieldManager") or fieldmanager.default_manager(self.headers.get("User-Agent") or "")
        if name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1"):
                    watch.serve(self, rt, ns, q, self._wants_table())
                    return
                listing = list_objects(
                    reg.store,
                    rt,
                    ns,
                    q.get("labelSelector", ""),
                    q.get("fieldSelector", ""),
                    int(q.get("limit") or 0),
                    q.get("continue", ""),
                )
                if self._wants_table():
                    self._json(
                        200,
                        resource_table(
                            rt, listing["items"], listing["metadata"], q.get("includeObject", "Metadata")
                        ),
                    )
                else:
                    self._json(200, listing)
                return
            if method == "POST":
                if ns is None and rt.namespaced:
                    raise errors.method_not_allowed(method)
                obj = reg.create(
                    rt, ns or "", self._parsed_body(raw), dry_run=dry_run, strict=strict, manager=manager
                )
                self._json(201, self._maybe_table(rt, obj, q))
                return
            if method == "DELETE":
                opts = self._delete_options(raw, q)
                self._json(
                    200,
                    reg.delete_collection(
                        rt, ns, q.get("labelSelector", ""), q.get("fieldSelector", ""), opts
                    ),
                )
                return
            raise errors.method_not_allowed(method)
        ns = ns or ""
        if sub == "scale":
            if method == "GET":
                self._json(200, reg.get_scale(rt, ns, name))
            elif method == "PUT":
                body = self._parsed_body(raw)
                self._json(200, reg.update(rt, ns, name, body, "scale", dry_run=dry_run, manager=manager))
            elif method == "PATCH":
                ctype = self.headers.get("Content-Type") or ""
                obj, _ = reg.patch(rt, ns, name, ctype, raw, "scale", dry_run=dry_run, manager=manager)
                self._json(200, obj)
            else:
                raise errors.method_not_allowed(method)
            return
        if sub == "log" and method == "GET":
            self._pod_log(rt, ns, name, q)
            return
        if sub in ("binding", "eviction") and method == "POST":
            self._json(201, pod_action(reg, rt, ns, name, sub, self._parsed_body(raw)))
            return
        if sub == "finalize" and method == "PUT":
            self._json(200, finalize_namespace(reg, rt, name, self._parsed_body(raw)))
            return
        if method == "GET":
            self._json(200, self._maybe_table(rt, reg.get(rt, ns, name), q))
        elif method == "PUT":
            before = reg.store.get(rt.key, ns, name)
            obj = reg.update(
                rt, ns, name, self._parsed_body(raw), sub, dry_run=dry_run, strict=strict, manager=manager
            )
            self._json(201 if before is None else 200, obj)
        elif method == "PATCH":
            obj, created = reg.patch(
                rt,
                ns,
                name,
                self.headers.get("Content-Type") or "",
                raw,
                sub,
                dry_run=dry_run,
                strict=strict,
                field_manager=q.get("fieldManager"),
                force=q.get("force") == "true",
                manager=manager,
            )
            self._json(201 if created else 200, obj)
        elif method == "DELETE":
            body, _ = reg.delete(rt, ns, name, self._delete_options(raw, q))
            self._json(200, body)
        else:
            raise errors.method_not_allowed(method)

    def _pod_log(self, rt: ResourceType, ns: str, name: str, q: dict[str, str]) -> None:
        pod = self.server.registry.get(rt, ns, name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            choices = " ".join(map(str, containers))
            raise errors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{choices}]"
            )
        if container not in containers:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        tail = int(q["tailLines"]) if q.get("tailLines", "").isdigit() else None
        text = None
        if self.server.log_reader is not None:
            text = self.server.log_reader(ns, name, container, tail, q.get("previous") == "true")
        if text is None:
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        self._send(200, text.encode(), "text/plain")

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def _maybe_table(self, rt: ResourceType, obj: Obj, q: dict[str, str]) -> Obj:
        if self._wants_table():
            return resource_table(
                rt,
                [obj],
                {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                q.get("includeObject", "Metadata"),
            )
        return obj

    def _delete_options(self, raw: bytes, q: dict[str, str]) -> DeleteOptions:
        body = self._parsed_body(raw) if raw.strip() else None
        body = body if isinstance(body, dict) else {}
        policy = body.get("propagationPolicy") or q.get("propagationPolicy") or None
        orphan = body.get("orphanDependents", q.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if orphan in (True, "true") else "Background"
        grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        pre = body.get("preconditions") or {}
        dry = body.get("dryRun") or ([q["dryRun"]] if q.get("dryRun") else [])
        return DeleteOptions(
            propagation=policy,
            grace=int(grace) if grace not in (None, "") else None,
            uid=pre.get("uid"),
            rv=pre.get("resourceVersion"),
            dry_run="All" in dry,
        )


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}
