"""The credential blocks of ``prefect-kubernetes`` and ``prefect-aws``, as stateferry blocks (pure).

Users who already keep a ``KubernetesClusterConfig`` / ``KubernetesCredentials`` or an
``AwsCredentials`` / ``MinIOCredentials`` / ``S3Bucket`` block pass it wherever a :class:`KubeCluster`
or :class:`ObjectStore` is accepted; the flow converts it once, here, and works with the stateferry
block from then on. Nothing is read from the environment (no ``~/.aws``, no ``~/.kube/config``): what
a block does not hold, the conversion refuses with an :class:`InputError` naming the field and the fix.

Secrets stay :class:`~pydantic.SecretStr` (a ``KubernetesClusterConfig`` keeps its kubeconfig as a
plain dict: it becomes the SecretStr kubeconfig of the ``KubeCluster``) and no message here quotes a
field's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from prefect_aws.credentials import AwsCredentials, MinIOCredentials
from prefect_aws.s3 import S3Bucket
from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials
from pydantic import SecretStr, ValidationError

from blocks._validation import check_nonempty, check_pem, parse_endpoint
from blocks.kube import KubeCluster, parse_kubeconfig
from blocks.object_store import ObjectStore
from stateferry.errors import InputError

__all__ = [
    "KubeClusterLike",
    "ObjectStoreLike",
    "StoreRef",
    "kube_from_cluster_config",
    "kube_from_credentials",
    "store_from_aws",
    "store_from_minio",
    "store_from_s3_bucket",
    "to_kube_cluster",
    "to_object_store",
]

#: Everything a cluster parameter accepts (besides a saved block's name).
KubeClusterLike: TypeAlias = KubeCluster | KubernetesClusterConfig | KubernetesCredentials
#: Everything an object-store parameter accepts (besides a saved block's name).
ObjectStoreLike: TypeAlias = ObjectStore | AwsCredentials | MinIOCredentials | S3Bucket

#: botocore ``Config`` keys that only tune the client: stateferry's clients keep their own timeouts,
#: retries and pool sizes, so these are left out rather than refused.
_CLIENT_TUNING = frozenset(
    {"connect_timeout", "read_timeout", "retries", "max_pool_connections", "tcp_keepalive"}
    | {"user_agent", "user_agent_extra", "user_agent_appid"}
)


@dataclass(frozen=True)
class StoreRef:
    """An object store and, when the block named one (``S3Bucket``), its bucket.

    Attributes:
        store: The stateferry block the flow works with.
        bucket: The ``S3Bucket`` block's bucket, else None.
    """

    store: ObjectStore
    bucket: str | None = None

    def bucket_or(self, given: str | None) -> str | None:
        """The bucket a flow uses: the parameter when given, else the block's bucket (may be None)."""
        return given or self.bucket

    def require_bucket(self, given: str | None, field: str) -> str:
        """Like :meth:`bucket_or`, for flows that need a bucket.

        Raises:
            InputError: Naming ``field`` when neither the parameter nor the block names a bucket.
        """
        bucket = self.bucket_or(given)
        if not bucket:
            raise InputError(
                field,
                "is not set and the object store names no bucket",
                "give the bucket, or pass an S3 Bucket block",
            )
        return bucket


# --------------------------------------------------------------------------------------------------
# Kubernetes


def kube_from_cluster_config(
    block: KubernetesClusterConfig, where: str = "KubernetesClusterConfig"
) -> KubeCluster:
    """Convert a prefect-kubernetes ``KubernetesClusterConfig`` (``config`` dict + ``context_name``).

    The kubeconfig is cut down to the chosen context, its cluster and its user, and kept as a secret.

    Args:
        block: The prefect-kubernetes block.
        where: How messages name the block (e.g. ``"source"``).

    Returns:
        An equivalent :class:`KubeCluster`.

    Raises:
        InputError: The context, its cluster or its user is missing, or the user authenticates with an
            exec plugin or an auth-provider (a command or a cloud login on the machine running the flow).
    """
    text = yaml.safe_dump(block.config, sort_keys=False)
    try:
        config, context = parse_kubeconfig(text, block.context_name)
    except InputError as exc:
        field = {"kubeconfig": "config", "context": "context_name"}.get(exc.field, exc.field)
        raise InputError(f"{where}.{field}", exc.problem, exc.fix) from None
    spec = _entry(config, "contexts", context).get("context") or {}
    cluster = _entry(config, "clusters", spec["cluster"])
    user = _entry(config, "users", spec["user"]) if spec.get("user") is not None else None
    for plugin in ("exec", "auth-provider"):
        if user is not None and (user.get("user") or {}).get(plugin):
            raise InputError(
                f"{where}.config.users[{user['name']!r}].user.{plugin}",
                f"context {context!r} authenticates with an {plugin} plugin, which needs a command or a"
                " cloud login on the machine running the flow",
                "save a kubeconfig whose user has a token or a client certificate (e.g. a service"
                " account token from `kubectl create token`), or use a Stateferry Kube Cluster block",
            )
    minimal = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "contexts": [_entry(config, "contexts", context)],
        "users": [user] if user is not None else [],
        "current-context": context,
    }
    return KubeCluster(kubeconfig=SecretStr(yaml.safe_dump(minimal, sort_keys=False)), context=context)


def kube_from_credentials(block: KubernetesCredentials, where: str = "KubernetesCredentials") -> KubeCluster:
    """Convert a prefect-kubernetes ``KubernetesCredentials`` block.

    With a ``cluster_config`` it is that config's cluster; without one, prefect-kubernetes uses the
    pod's service account, and so does the result (``in_cluster=True``; the local ``~/.kube/config``
    fallback of prefect-kubernetes is not followed).

    Raises:
        InputError: As :func:`kube_from_cluster_config`.
    """
    if block.cluster_config is None:
        return KubeCluster(in_cluster=True)
    return kube_from_cluster_config(block.cluster_config, f"{where}.cluster_config")


def to_kube_cluster(block: KubeClusterLike, where: str) -> KubeCluster:
    """Any accepted cluster block as a :class:`KubeCluster` (a ``KubeCluster`` is returned as it is).

    Raises:
        InputError: The block cannot be converted, or is of another type.
    """
    if isinstance(block, KubeCluster):
        return block
    if isinstance(block, KubernetesClusterConfig):
        return kube_from_cluster_config(block, where)
    if isinstance(block, KubernetesCredentials):
        return kube_from_credentials(block, where)
    raise InputError(
        where,
        f"a {type(block).__name__} is not a cluster",
        "pass a KubeCluster, KubernetesClusterConfig or KubernetesCredentials block (or its saved name)",
    )


def _entry(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    return next(e for e in config.get(section) or [] if isinstance(e, dict) and e.get("name") == name)


# --------------------------------------------------------------------------------------------------
# S3


def store_from_aws(block: AwsCredentials, where: str = "AwsCredentials") -> ObjectStore:
    """Convert a prefect-aws ``AwsCredentials`` block (static access key + secret).

    Without ``aws_client_parameters.endpoint_url`` the store is AWS S3 of ``region_name``
    (``s3.<region>.amazonaws.com``; region ``us-east-1`` when unset).

    Args:
        block: The prefect-aws block.
        where: How messages name the block (e.g. ``"object_store"``).

    Raises:
        InputError: A profile, session token or role to assume (credentials stateferry's clients
            cannot hold or renew), no access key, or an unsupported client parameter.
    """
    refused = {
        "profile_name": "a profile is read from ~/.aws on the machine running the flow",
        "aws_session_token": "temporary credentials expire during long runs and the S3 clients keep none",
        "assume_role_arn": "stateferry's S3 clients do not assume roles",
    }
    for field, problem in refused.items():
        if getattr(block, field):
            raise InputError(
                f"{where}.{field}",
                f"is set: {problem}",
                "clear it and give a static aws_access_key_id and aws_secret_access_key",
            )
    if not block.aws_access_key_id or block.aws_secret_access_key is None:
        raise InputError(
            f"{where}.aws_access_key_id",
            "and aws_secret_access_key are not both set (credentials from the environment or an"
            " instance role are not used)",
            "set aws_access_key_id and aws_secret_access_key",
        )
    check_nonempty(f"{where}.aws_access_key_id", block.aws_access_key_id, "give the access key id")
    return _store(block, where, block.aws_access_key_id, block.aws_secret_access_key, aws_default=True)


def store_from_minio(block: MinIOCredentials, where: str = "MinIOCredentials") -> ObjectStore:
    """Convert a prefect-aws ``MinIOCredentials`` block (root user/password + endpoint).

    Raises:
        InputError: No ``aws_client_parameters.endpoint_url``, an empty user, or an unsupported
            client parameter.
    """
    check_nonempty(f"{where}.minio_root_user", block.minio_root_user, "give the MinIO user")
    return _store(block, where, block.minio_root_user, block.minio_root_password, aws_default=False)


def store_from_s3_bucket(block: S3Bucket, where: str = "S3Bucket") -> StoreRef:
    """Convert a prefect-aws ``S3Bucket`` block: its credentials' store and its ``bucket_name``.

    Raises:
        InputError: ``bucket_folder`` is set (flows take their key prefix as a parameter), or the
            credentials cannot be converted.
    """
    if block.bucket_folder.strip("/"):
        raise InputError(
            f"{where}.bucket_folder",
            "is set, and stateferry flows take their key prefix as a parameter",
            "clear bucket_folder and give the folder as the flow's prefix / backup_dir",
        )
    creds = block.credentials
    inner = f"{where}.credentials"
    store = (
        store_from_minio(creds, inner)
        if isinstance(creds, MinIOCredentials)
        else store_from_aws(creds, inner)
    )
    return StoreRef(store, block.bucket_name)


def to_object_store(block: ObjectStoreLike, where: str) -> StoreRef:
    """Any accepted object-store block as a :class:`StoreRef` (an ``ObjectStore`` as it is).

    Raises:
        InputError: The block cannot be converted, or is of another type.
    """
    if isinstance(block, ObjectStore):
        return StoreRef(block)
    if isinstance(block, S3Bucket):
        return store_from_s3_bucket(block, where)
    if isinstance(block, MinIOCredentials):
        return StoreRef(store_from_minio(block, where))
    if isinstance(block, AwsCredentials):
        return StoreRef(store_from_aws(block, where))
    raise InputError(
        where,
        f"a {type(block).__name__} is not an object store",
        "pass an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket block (or its saved name)",
    )


def _store(
    block: AwsCredentials | MinIOCredentials,
    where: str,
    access_key: str,
    secret: SecretStr,
    *,
    aws_default: bool,
) -> ObjectStore:
    params = block.aws_client_parameters
    pfx = f"{where}.aws_client_parameters"
    region = block.region_name or "us-east-1"
    if params.api_version is not None:
        raise InputError(f"{pfx}.api_version", "is set", "clear it (stateferry speaks the current S3 API)")
    _check_config(params.config or {}, f"{pfx}.config")
    if params.endpoint_url:
        parsed = parse_endpoint(
            f"{pfx}.endpoint_url", params.endpoint_url, example="https://minio.example.com:9000"
        )
        secure = parsed.scheme == "https" if parsed.scheme else params.use_ssl
        endpoint = parsed.netloc
    elif aws_default:
        secure, endpoint = params.use_ssl, f"s3.{region}.amazonaws.com"
    else:
        raise InputError(
            f"{pfx}.endpoint_url",
            "is not set",
            "give the MinIO server's URL, e.g. https://minio.example.com:9000",
        )
    ca_bundle = _ca_bundle(params.verify, params.verify_cert_path, secure, pfx)
    try:
        return ObjectStore(
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret,
            secure=secure,
            ca_bundle=ca_bundle,
        )
    except ValidationError as exc:
        problems = "; ".join(
            str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_input=False)
        )
        raise InputError(
            where, f"cannot be used as an object store ({problems})", "fix the field named"
        ) from None


def _check_config(config: dict[str, Any], field: str) -> None:
    """Refuse botocore ``Config`` options that would change what the S3 client does."""
    for key, value in config.items():
        if key in _CLIENT_TUNING:
            continue
        if key == "signature_version" and value in (None, "s3v4"):
            continue
        if (
            key == "s3"
            and isinstance(value, dict)
            and set(value) <= {"addressing_style"}
            and value.get("addressing_style") in (None, "auto", "path")
        ):
            continue
        raise InputError(
            f"{field}.{key}",
            "is an option stateferry's S3 clients do not apply (they sign with SigV4 and use path-style"
            " addressing)",
            "remove it from the block's aws_client_parameters.config",
        )


def _ca_bundle(
    verify: bool | Path | None, cert_path: Path | None, secure: bool, field: str
) -> SecretStr | None:
    path = cert_path or (verify if isinstance(verify, Path) else None)
    if verify is False and cert_path is None and secure:
        raise InputError(
            f"{field}.verify",
            "is false: stateferry never turns off TLS certificate checks",
            "set verify to true and give the server's CA certificate file in verify_cert_path",
        )
    if path is None:
        return None
    name = f"{field}.verify_cert_path"
    if not secure:
        raise InputError(
            name, "is set but the endpoint is plain http", "use an https endpoint_url or clear it"
        )
    try:
        pem = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            name, f"cannot read {str(path)!r} ({type(exc).__name__})", "give a readable PEM file"
        ) from None
    return SecretStr(check_pem(name, pem, kinds=("CERTIFICATE",)))
