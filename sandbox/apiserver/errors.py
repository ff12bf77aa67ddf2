"""Kubernetes ``Status`` error objects, shaped exactly as a real kube-apiserver sends them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client as a ``Status`` object (or plain text when ``plain`` is set)."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        plain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.plain = plain

    def status(self) -> dict[str, Any]:
        """Return the ``Status`` body of this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(
    name: str | None, group: str, kind: str, causes: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    """404 NotFound for a missing object."""
    return ApiError(
        404, "NotFound", f'{_qualified(plural, group)} "{name}" not found', _details(name, group, plural)
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    """409 AlreadyExists for a create of an existing name."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        _details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    """409 Conflict for a write carrying a stale resourceVersion."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(name, group, plural),
    )


def cause(field: str, reason: str, message: str) -> dict[str, str]:
    """One entry of ``details.causes``."""
    return {"reason": reason, "message": message, "field": field}


class FieldError:
    """A validation error on one field, rendered like k8s.io/apimachinery field.Error."""

    def __init__(self, field: str, kind: str, value: Any = None, detail: str = "") -> None:
        self.field = field
        self.kind = kind  # Invalid, Required, Forbidden, Duplicate, NotSupported, TooLong
        self.value = value
        self.detail = detail

    @property
    def reason(self) -> str:
        """The ``causes[].reason`` of this error."""
        return {
            "Invalid": "FieldValueInvalid",
            "Required": "FieldValueRequired",
            "Forbidden": "FieldValueForbidden",
            "Duplicate": "FieldValueDuplicate",
            "NotSupported": "FieldValueNotSupported",
            "TooLong": "FieldValueTooLong",
            "TooMany": "FieldValueTooMany",
            "NotFound": "FieldValueNotFound",
        }[self.kind]

    def body(self) -> str:
        """The message without the field name (``Invalid value: "x": detail``)."""
        if self.kind == "Invalid":
            text = f"Invalid value: {_go_value(self.value)}"
        elif self.kind == "Required":
            text = "Required value"
        elif self.kind == "Forbidden":
            text = "Forbidden"
        elif self.kind == "Duplicate":
            text = f"Duplicate value: {_go_value(self.value)}"
        elif self.kind == "NotSupported":
            text = f"Unsupported value: {_go_value(self.value)}"
        elif self.kind == "NotFound":
            text = f"Not found: {_go_value(self.value)}"
        elif self.kind == "TooLong":
            text = "Too long"
        else:
            text = "Too many"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def message(self) -> str:
        """The full ``field: body`` message."""
        return f"{self.field}: {self.body()}"


class RawValue(str):
    """A value rendered without quotes in messages (``map[string]string{...}``)."""


def _go_value(value: Any) -> str:
    if isinstance(value, RawValue):
        return str(value)
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid with one cause per field error; ``kind`` is the Kind (``StatefulSet``)."""
    causes = [cause(e.field, e.reason, e.body()) for e in errors]
    if len(errors) == 1:  # noqa: SIM108
        summary = errors[0].message()
    else:
        summary = "[" + ", ".join(e.message() for e in errors) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind}{"." + group if group else ""} "{name}" is invalid: {summary}',
        _details(name, group, kind, causes),
    )


def bad_request(message: str, details: dict[str, Any] | None = None) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message, details)


def forbidden(
    plural: str, group: str, name: str, message: str, causes: list[dict[str, str]] | None = None
) -> ApiError:
    """403 Forbidden."""
    return ApiError(403, "Forbidden", message, _details(name, group, plural, causes))


def unsupported_media_type(accepted: list[str]) -> ApiError:
    """415 UnsupportedMediaType listing the patch types the resource accepts."""
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def method_not_allowed(method: str) -> ApiError:
    """405 MethodNotAllowed."""
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
    )


def server_could_not_find() -> ApiError:
    """404 for an unknown version/resource inside a known group."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def page_not_found() -> ApiError:
    """Plain-text 404 for an unknown path or API group."""
    return ApiError(404, "NotFound", "404 page not found", plain="404 page not found\n")
