"""Classify what the Kubernetes API (or the kubeconfig loader) raised."""

from __future__ import annotations

import json
from typing import Any

from stateferry.errors.matching import context_prefix, http_status_error, is_instance
from stateferry.errors.taxonomy import FieldCause, InputError, StateferryError, TransientError


def _k8s_status(body: Any) -> tuple[str, tuple[FieldCause, ...]]:
    """The message and the ``details.causes`` of a Kubernetes ``Status`` body."""
    if not body:
        return "", ()
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300], ()
    if not isinstance(parsed, dict):
        return "", ()
    causes = ((parsed.get("details") or {}) if isinstance(parsed.get("details"), dict) else {}).get("causes")
    found = tuple(
        FieldCause(str(c.get("field") or ""), str(c.get("reason") or ""), str(c.get("message") or ""))
        for c in (causes if isinstance(causes, list) else [])
        if isinstance(c, dict)
    )
    return str(parsed.get("message") or parsed.get("reason") or ""), found


def from_kubernetes(exc: BaseException, context: str) -> StateferryError | None:
    """Classify a Kubernetes ``ApiException`` (by HTTP status) or a kubeconfig ``ConfigException``."""
    if is_instance(exc, "kubernetes.client.exceptions", "ApiException"):
        status = getattr(exc, "status", None) or 0
        message, causes = _k8s_status(getattr(exc, "body", None))
        message = message or str(getattr(exc, "reason", "") or "")
        if status == 0:
            return TransientError(
                f"{context_prefix(context)}Kubernetes API request failed without a response: {message}"
            )
        found = http_status_error(int(status), "the Kubernetes API", message, context)
        found.causes = causes
        return found
    if is_instance(exc, "kubernetes.config.config_exception", "ConfigException"):
        return InputError(
            "kubeconfig",
            f"{context_prefix(context)}{exc}",
            "supply a valid kubeconfig and an existing context name",
        )
    return None
