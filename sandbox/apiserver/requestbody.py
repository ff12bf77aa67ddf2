"""Request bodies into objects: decoding a POST/PUT body into its Kind, parsing a PATCH body by
its content type, and decoding the object a patch produced (the errors a real server answers)."""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from sandbox.apiserver import errors
from sandbox.apiserver.crd import prune
from sandbox.apiserver.decode import DecodeError, Decoder
from sandbox.apiserver.errors import ApiError, FieldError
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj


def decode(rt: ResourceType, body: Any, strict: bool = False) -> Obj:
    """Decode a request body into the Kind (400 on a type mismatch, unknown fields dropped)."""
    if not isinstance(body, dict):
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '
            f"{type(body).__name__} into Go value of type {rt.kind}"
        )
    if rt.custom:
        return prune(rt, body)
    if rt.model is None:
        return body
    decoder = Decoder(strict=strict)
    try:
        out = decoder.decode(body, rt.model)
    except DecodeError as exc:
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {exc}'
        ) from None
    if strict and decoder.unknown:
        fields = ", ".join(f'unknown field "{f}"' for f in decoder.unknown)
        raise errors.bad_request(f"strict decoding error: {fields}")
    return out


def parse_patch(
    rt: ResourceType,
    content_type: str,
    raw: bytes,
    subresource: str | None,
    field_manager: str | None,
    force: bool,
) -> tuple[str, Any]:
    """The media type and the parsed body of a PATCH (415 / 422 / 400 as a real server answers).

    Returns:
        ``(media type, patch)``; an apply patch is YAML, the others JSON.
    """
    ctype = content_type.split(";")[0].strip().lower()
    accepted = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    if not rt.custom:
        accepted.append("application/strategic-merge-patch+json")
    if ctype not in accepted:
        raise errors.unsupported_media_type(accepted)
    if force and ctype != "application/apply-patch+yaml":
        raise errors.invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            [FieldError("force", "Forbidden", None, "may not be specified for non-apply patch")],
        )
    if ctype == "application/apply-patch+yaml":
        if not field_manager:
            raise errors.invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [FieldError("fieldManager", "Required", None, "is required for apply patch")],
            )
        try:
            patch = yaml.safe_load(raw.decode() or "{}")
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error decoding YAML: {exc}") from None
        if not isinstance(patch, dict):
            raise errors.bad_request("error decoding YAML: the applied configuration is not an object")
        if subresource is None and patch.get("apiVersion") != rt.api_version:
            raise errors.bad_request(
                "Incorrect version specified in apply patch. Specified patch version: "
                f"{patch.get('apiVersion') or ''}, expected: {rt.api_version}"
            )
    else:
        try:
            patch = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.bad_request("unexpected end of JSON input" if raw.strip() else "EOF") from None
    return ctype, patch


def decode_patched(rt: ResourceType, new: Obj, ctype: str, raw: bytes, strict: bool) -> Obj:
    """Decode the object a patch produced into its Kind: a type mismatch is a 422 on ``patch``."""
    if rt.model is not None:
        decoder = Decoder(strict=strict)
        try:
            new = decoder.decode(new, rt.model)
        except DecodeError as exc:
            detail = (
                "cannot convert int64 to string"
                if ctype == "application/strategic-merge-patch+json"
                and "number" in str(exc)
                and "of type string" in str(exc)
                else str(exc)
            )
            # the real server echoes the patch; a Secret's patch is not echoed (secret data)
            shown = '"<redacted>"' if rt.key == ("", "secrets") else orjson.dumps(raw.decode()).decode()
            body = f"Invalid value: {shown}: {detail}"
            raise ApiError(
                422,
                "Invalid",
                f' "" is invalid: patch: {body}',
                {"causes": [errors.cause("patch", "FieldValueInvalid", body)]},
            ) from None
        if strict and decoder.unknown:
            raise errors.bad_request(
                "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in decoder.unknown)
            )
    return new
