"""Resolve the block parameters of flows and job configs, once, at the flow edge.

A parameter is a block instance or the name of a saved block document:

- a plain name (``"prod"``) is a saved block of the parameter's own stateferry type
  (``KubeCluster`` / ``ObjectStore`` / ``Database`` ...);
- ``"<block-type-slug>/<name>"`` (``"aws-credentials/prod"``, ``"kubernetes-cluster-config/dr"``,
  ``"s3-bucket/backups"``, ``"stateferry-object-store/prod"``) is a saved block of that type, which
  must be one the parameter accepts (:data:`blocks.compat.KubeClusterLike` /
  :data:`blocks.compat.ObjectStoreLike`).

prefect-kubernetes / prefect-aws blocks are converted by :mod:`blocks.compat`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect.blocks.core import Block

from blocks.compat import KubeClusterLike, ObjectStoreLike, StoreRef, to_kube_cluster, to_object_store
from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from stateferry.errors import InputError

__all__ = ["load_saved", "resolve_bucket", "resolve_kube", "resolve_store"]

B = TypeVar("B", bound=Block)

_KUBE_TYPES = "KubeCluster, KubernetesClusterConfig or KubernetesCredentials"
_STORE_TYPES = "ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket"


def load_saved(cls: type[B], name: str, field: str) -> B:
    """Load the saved block document ``name`` of type ``cls`` (a plain name, no slug).

    Raises:
        InputError: Naming ``field`` when no such block is saved.
    """
    try:
        return cls.load(name)  # type: ignore[return-value]
    except ValueError as exc:
        raise InputError(
            field,
            f"no saved {cls.__name__} block named {name!r} ({exc})",
            f"save one (stateferry blocks register; {cls.__name__}(...).save({name!r})) or fix the name",
        ) from None


def _load_reference(reference: str, field: str, accepted: str) -> Any:
    """Load ``"<block-type-slug>/<name>"`` whatever its type (the caller checks the type)."""
    slug, _, name = reference.partition("/")
    if not slug or not name or "/" in name:
        raise InputError(field, f"{reference!r} is not <block-type-slug>/<name>", "e.g. aws-credentials/prod")
    try:
        return Block.load(reference)
    except (ValueError, KeyError) as exc:
        raise InputError(
            field,
            f"cannot load the saved block {reference!r} ({exc})",
            f"save a {accepted} block under that name, or fix the type slug / name",
        ) from None


def resolve_kube(value: KubeClusterLike | str, field: str) -> KubeCluster:
    """A cluster parameter (block, plain name, or ``slug/name``) as a :class:`KubeCluster`.

    Args:
        value: What the flow or job config was given.
        field: The parameter's name, for messages.

    Raises:
        InputError: Nothing saved under that name, a block of another type, or a block that cannot be
            converted (see :mod:`blocks.compat`).
    """
    if isinstance(value, str) and value:
        if "/" not in value:
            return load_saved(KubeCluster, value, field)
        value = _load_reference(value, field, _KUBE_TYPES)
    if isinstance(value, str):
        raise InputError(field, "is empty", f"give a {_KUBE_TYPES} block or its saved name")
    return to_kube_cluster(value, field)


def resolve_store(value: ObjectStoreLike | str, field: str) -> StoreRef:
    """An object-store parameter (block, plain name, or ``slug/name``) as a :class:`StoreRef`.

    Raises:
        InputError: As :func:`resolve_kube`.
    """
    if isinstance(value, str) and value:
        if "/" not in value:
            return StoreRef(load_saved(ObjectStore, value, field))
        value = _load_reference(value, field, _STORE_TYPES)
    if isinstance(value, str):
        raise InputError(field, "is empty", f"give a {_STORE_TYPES} block or its saved name")
    return to_object_store(value, field)


def resolve_bucket(
    value: ObjectStoreLike | str, field: str, bucket: str | None, bucket_field: str = "options.bucket"
) -> tuple[ObjectStore, str]:
    """An object-store parameter and the bucket a flow needs in it (given, else the S3Bucket block's).

    Args:
        value: What the flow was given for the store (as in :func:`resolve_store`).
        field: The store parameter's name, for messages.
        bucket: The bucket the flow was given, or None to take the block's.
        bucket_field: The bucket's name in messages.

    Raises:
        InputError: As :func:`resolve_store`, or naming ``bucket_field`` when neither the flow nor the
            block names a bucket.
    """
    ref = resolve_store(value, field)
    return ref.store, ref.require_bucket(bucket, bucket_field)
