"""Classify gRPC errors and etcd's messages (through grpc or etcd3aio)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stateferry.errors.matching import context_prefix, is_instance, loaded_class
from stateferry.errors.taxonomy import PermanentError, PreconditionFailed, StateferryError, TransientError

_ETCD_TRANSIENT_MESSAGES = (
    "too many requests",
    "leader changed",
    "unhealthy cluster",
    "no leader",
    "request timed out",
    "timed out waiting for read index",
    "not enough started members",
    "can only promote a learner member which is in sync with leader",
    "server stopped",
)
_ETCD_PERMANENT_MESSAGES = {
    "peer urls already exists": "a member with these peer URLs is already registered: reuse it "
    "(re-read the member list) or remove it first",
    "member not found": "the member id is not in the cluster: re-read the member list",
    "permission denied": "the etcd user lacks permission: grant the role or use another user",
    "authentication failed": "etcd rejected the user name or password: check EtcdCluster.username/password",
    "invalid auth token": "the etcd auth token is invalid: check EtcdCluster.username/password",
    "user name is empty": "set EtcdCluster.username",
    "too many learner members": "etcd allows one learner at a time: promote or remove the existing learner",
    "required revision has been compacted": "the revision was compacted away: use a newer revision",
    "required revision is a future revision": "the revision does not exist yet: use the current revision",
    "can only promote a learner member": "the member is not a learner: nothing to promote",
    "learner": "learner members cannot serve this request: send it to a voting member",
    "member id already exist": "the member is already registered: re-read the member list",
}
_GRPC_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


def _etcd_message_error(details: str, code_name: str, context: str) -> StateferryError:
    lowered = details.lower()
    where = f"{context_prefix(context)}etcd answered {code_name}: {details}".rstrip(": ")
    for needle in _ETCD_TRANSIENT_MESSAGES:
        if needle in lowered:
            return TransientError(f"{where} (transient: a retry may succeed)")
    for needle, fix in _ETCD_PERMANENT_MESSAGES.items():
        if needle in lowered:
            return PermanentError(f"{where}. {fix}")
    if code_name in _GRPC_TRANSIENT_CODES:
        return TransientError(f"{where} (transient: a retry may succeed)")
    if code_name == "UNAUTHENTICATED":
        return PermanentError(f"{where}. {_ETCD_PERMANENT_MESSAGES['authentication failed']}")
    if code_name == "PERMISSION_DENIED":
        return PermanentError(f"{where}. {_ETCD_PERMANENT_MESSAGES['permission denied']}")
    if code_name == "FAILED_PRECONDITION":
        return PreconditionFailed(f"{where}. Re-read the cluster state before retrying")
    return PermanentError(f"{where}. The request was refused: fix it before retrying")


def from_grpc(exc: BaseException, context: str) -> StateferryError | None:
    """Classify a gRPC ``RpcError`` by etcd's message, then by its status code."""
    rpc_error = loaded_class("grpc", "RpcError")
    if rpc_error is None or not isinstance(exc, rpc_error):
        return None
    code_fn: Callable[[], Any] | None = getattr(exc, "code", None)
    details_fn: Callable[[], Any] | None = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else ""
    code_name = getattr(code, "name", str(code or "UNKNOWN"))
    return _etcd_message_error(str(details or ""), code_name, context)


def from_etcd3aio(exc: BaseException, context: str) -> StateferryError | None:
    """Classify an etcd3aio ``EtcdError`` (through the gRPC error it wraps, if any)."""
    if not is_instance(exc, "etcd3aio.errors", "EtcdError"):
        return None
    cause = exc.__cause__
    if cause is not None:
        translated = from_grpc(cause, context)
        if translated is not None:
            return translated
    text = str(exc)
    if is_instance(exc, "etcd3aio.errors", "EtcdUnauthenticatedError"):
        return _etcd_message_error(text or "authentication failed", "UNAUTHENTICATED", context)
    if is_instance(exc, "etcd3aio.errors", "EtcdPermissionDeniedError"):
        return _etcd_message_error(text or "permission denied", "PERMISSION_DENIED", context)
    if is_instance(exc, "etcd3aio.errors", "EtcdConnectionError", "EtcdTransientError"):
        return TransientError(
            f"{context_prefix(context)}etcd is unreachable: {text} (transient: a retry may succeed)"
        )
    return _etcd_message_error(text, "UNKNOWN", context)
