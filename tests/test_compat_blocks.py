"""prefect-aws / prefect-kubernetes credential blocks accepted wherever a KubeCluster / ObjectStore is.

Conversions (``blocks/compat.py``) table by table, the flows' parameter schema, and saved references
(``blocks/loading.py``). Saved blocks in real flow runs: ``tests/test_compat_flows.py`` (S3) and
``tests/resources/test_compat_kube.py`` (with the sandbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect_aws.client_parameters import AwsClientParameters
from prefect_aws.credentials import AwsCredentials, MinIOCredentials
from prefect_aws.s3 import S3Bucket
from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials
from pydantic import SecretStr

from blocks.compat import StoreRef, to_kube_cluster, to_object_store
from blocks.kube import KubeCluster
from blocks.loading import resolve_kube, resolve_store
from blocks.object_store import ObjectStore
from stateferry.errors import InputError

pytestmark = pytest.mark.timeout(300)

SECRET = "compat-secret-" + "q" * 12
TOKEN = "compat-token-" + "t" * 12
OTHER_TOKEN = "other-token-" + "o" * 12
PEM = "-----BEGIN CERTIFICATE-----\nMIIBcompat\n-----END CERTIFICATE-----\n"


def _aws(**kw: Any) -> AwsCredentials:
    return AwsCredentials(**{"aws_access_key_id": "AKIDCOMPAT", "aws_secret_access_key": SECRET, **kw})


def _minio(**kw: Any) -> MinIOCredentials:
    base: dict[str, Any] = {"minio_root_user": "minio-user", "minio_root_password": SECRET}
    base["aws_client_parameters"] = {"endpoint_url": "http://127.0.0.1:9000"}
    return MinIOCredentials(**{**base, **kw})


def _ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text(PEM)
    return path


# --------------------------------------------------------------------------------------------------
# S3 conversions

#: id -> (block factory, (endpoint, secure, region, access key, bucket, CA PEM or None))
STORES: dict[str, tuple[Callable[[Path], Any], tuple[str, bool, str, str, str | None, str | None]]] = {
    "aws-endpoint-http": (
        lambda _: _aws(
            region_name="eu-central-1", aws_client_parameters={"endpoint_url": "http://10.1.2.3:8333"}
        ),
        ("10.1.2.3:8333", False, "eu-central-1", "AKIDCOMPAT", None, None),
    ),
    "aws-s3-of-region": (
        lambda _: _aws(region_name="eu-west-3"),
        ("s3.eu-west-3.amazonaws.com", True, "eu-west-3", "AKIDCOMPAT", None, None),
    ),
    "aws-default-region": (
        lambda _: _aws(),
        ("s3.us-east-1.amazonaws.com", True, "us-east-1", "AKIDCOMPAT", None, None),
    ),
    "aws-host-port-use-ssl-false": (
        lambda _: _aws(aws_client_parameters={"endpoint_url": "minio.local:9000", "use_ssl": False}),
        ("minio.local:9000", False, "us-east-1", "AKIDCOMPAT", None, None),
    ),
    "aws-harmless-botocore-config": (
        lambda _: _aws(
            aws_client_parameters={
                "endpoint_url": "https://s3.example.com",
                "config": {
                    "signature_version": "s3v4",
                    "s3": {"addressing_style": "path"},
                    "retries": {"max_attempts": 9},
                    "connect_timeout": 3,
                },
            }
        ),
        ("s3.example.com", True, "us-east-1", "AKIDCOMPAT", None, None),
    ),
    "minio-https-with-ca-file": (
        lambda tmp: _minio(
            region_name="eu-1",
            aws_client_parameters={
                "endpoint_url": "https://minio.example.com:9000",
                "verify_cert_path": _ca_file(tmp),
            },
        ),
        ("minio.example.com:9000", True, "eu-1", "minio-user", None, PEM),
    ),
    "s3-bucket-with-minio": (
        lambda _: S3Bucket(bucket_name="team-backups", credentials=_minio()),
        ("127.0.0.1:9000", False, "us-east-1", "minio-user", "team-backups", None),
    ),
    "s3-bucket-with-aws": (
        lambda _: S3Bucket(bucket_name="aws-backups", credentials=_aws(region_name="ap-south-1")),
        ("s3.ap-south-1.amazonaws.com", True, "ap-south-1", "AKIDCOMPAT", "aws-backups", None),
    ),
}


@pytest.mark.parametrize("case", list(STORES))
def test_s3_blocks_convert_to_an_object_store(case: str, tmp_path: Path) -> None:
    make, (endpoint, secure, region, access_key, bucket, ca) = STORES[case]
    ref = to_object_store(make(tmp_path), "object_store")
    store = ref.store
    assert (store.endpoint, store.secure, store.region, store.access_key, ref.bucket) == (
        endpoint,
        secure,
        region,
        access_key,
        bucket,
    )
    assert isinstance(store.secret_key, SecretStr) and store.secret_key.get_secret_value() == SECRET
    assert (store.ca_bundle.get_secret_value() if store.ca_bundle else None) == ca
    assert SECRET not in repr(store) and SECRET not in str(ref)


def test_an_object_store_passes_through_and_the_bucket_parameter_wins() -> None:
    own = ObjectStore(endpoint="127.0.0.1:1", access_key="k", secret_key=SecretStr(SECRET))
    assert to_object_store(own, "object_store") == StoreRef(own, None)
    ref = to_object_store(S3Bucket(bucket_name="from-block", credentials=_minio()), "object_store")
    assert ref.bucket_or(None) == "from-block" and ref.bucket_or("given") == "given"
    assert ref.require_bucket("", "bucket") == "from-block"
    with pytest.raises(InputError) as err:
        StoreRef(own).require_bucket(None, "bucket")
    assert err.value.field == "bucket"


#: id -> (block factory, the field the InputError names)
STORE_ERRORS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "session-token": (lambda _: _aws(aws_session_token=TOKEN), "object_store.aws_session_token"),
    "profile": (lambda _: AwsCredentials(profile_name="prod"), "object_store.profile_name"),
    "assume-role": (
        lambda _: _aws(assume_role_arn="arn:aws:iam::123456789012:role/x"),
        "object_store.assume_role_arn",
    ),
    "ambient-credentials": (
        lambda _: AwsCredentials(region_name="eu-west-1"),
        "object_store.aws_access_key_id",
    ),
    "secret-without-key": (
        lambda _: AwsCredentials(aws_secret_access_key=SecretStr(SECRET)),
        "object_store.aws_access_key_id",
    ),
    "minio-without-endpoint": (
        lambda _: MinIOCredentials(minio_root_user="u", minio_root_password=SecretStr(SECRET)),
        "object_store.aws_client_parameters.endpoint_url",
    ),
    "minio-blank-user": (lambda _: _minio(minio_root_user="  "), "object_store.minio_root_user"),
    "tls-verification-off": (
        lambda _: _aws(aws_client_parameters={"endpoint_url": "https://s3.example.com", "verify": False}),
        "object_store.aws_client_parameters.verify",
    ),
    "ca-file-for-plain-http": (
        lambda tmp: _minio(
            aws_client_parameters={"endpoint_url": "http://127.0.0.1:9000", "verify_cert_path": _ca_file(tmp)}
        ),
        "object_store.aws_client_parameters.verify_cert_path",
    ),
    "endpoint-with-a-path": (
        lambda _: _aws(aws_client_parameters={"endpoint_url": "https://s3.example.com/tenant"}),
        "object_store.aws_client_parameters.endpoint_url",
    ),
    "endpoint-with-credentials": (
        lambda _: _aws(aws_client_parameters={"endpoint_url": f"https://u:{SECRET}@s3.example.com"}),
        "object_store.aws_client_parameters.endpoint_url",
    ),
    "api-version": (
        lambda _: _aws(aws_client_parameters={"api_version": "2006-03-01"}),
        "object_store.aws_client_parameters.api_version",
    ),
    "proxies": (
        lambda _: _aws(aws_client_parameters={"config": {"proxies": {"https": "http://proxy:3128"}}}),
        "object_store.aws_client_parameters.config.proxies",
    ),
    "virtual-host-addressing": (
        lambda _: _aws(aws_client_parameters={"config": {"s3": {"addressing_style": "virtual"}}}),
        "object_store.aws_client_parameters.config.s3",
    ),
    "unsigned-requests": (
        lambda _: _aws(aws_client_parameters={"config": {"signature_version": "unsigned"}}),
        "object_store.aws_client_parameters.config.signature_version",
    ),
    "bucket-folder": (
        lambda _: S3Bucket(bucket_name="b", bucket_folder="team/x", credentials=_minio()),
        "object_store.bucket_folder",
    ),
    "bucket-with-default-credentials": (
        lambda _: S3Bucket(bucket_name="b"),
        "object_store.credentials.aws_access_key_id",
    ),
    "bucket-with-session-token": (
        lambda _: S3Bucket(bucket_name="b", credentials=_aws(aws_session_token=TOKEN)),
        "object_store.credentials.aws_session_token",
    ),
    "a-cluster-block": (
        lambda _: KubeCluster(in_cluster=True),
        "object_store",
    ),
}


@pytest.mark.parametrize("case", list(STORE_ERRORS))
def test_unsupported_s3_options_name_the_field_and_never_the_secret(case: str, tmp_path: Path) -> None:
    make, field = STORE_ERRORS[case]
    with pytest.raises(InputError) as err:
        to_object_store(make(tmp_path), "object_store")
    assert err.value.field == field
    assert "Fix:" in str(err.value)
    for secret in (SECRET, TOKEN):
        assert secret not in str(err.value) and secret not in repr(err.value)


# --------------------------------------------------------------------------------------------------
# Kubernetes conversions


def _kubeconfig() -> dict[str, Any]:
    def ctx(name: str, cluster: str, user: str | None) -> dict[str, Any]:
        spec = {"cluster": cluster, "namespace": "default"}
        return {"name": name, "context": {**spec, "user": user} if user else spec}

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "prod", "cluster": {"server": "https://10.0.0.1:6443"}},
            {"name": "dev", "cluster": {"server": "https://10.0.0.2:6443"}},
        ],
        "users": [
            {"name": "admin", "user": {"token": TOKEN}},
            {"name": "dev-admin", "user": {"token": OTHER_TOKEN}},
            {
                "name": "eks",
                "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}},
            },
            {
                "name": "gke",
                "user": {"auth-provider": {"name": "gcp", "config": {"access-token": OTHER_TOKEN}}},
            },
        ],
        "contexts": [
            ctx("prod", "prod", "admin"),
            ctx("dev", "dev", "dev-admin"),
            ctx("eks", "prod", "eks"),
            ctx("gke", "prod", "gke"),
            ctx("anonymous", "prod", None),
            ctx("dangling", "nowhere", "admin"),
        ],
        "current-context": "dev",
    }


#: id -> (block factory, expected (context, server, token or None))
KUBES: dict[str, tuple[Callable[[], Any], tuple[str, str, str | None]]] = {
    "cluster-config": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="prod"),
        ("prod", "https://10.0.0.1:6443", TOKEN),
    ),
    "cluster-config-from-yaml-text": (
        lambda: KubernetesClusterConfig(config=yaml.safe_dump(_kubeconfig()), context_name="dev"),
        ("dev", "https://10.0.0.2:6443", OTHER_TOKEN),
    ),
    "credentials-with-cluster-config": (
        lambda: KubernetesCredentials(
            cluster_config=KubernetesClusterConfig(config=_kubeconfig(), context_name="prod")
        ),
        ("prod", "https://10.0.0.1:6443", TOKEN),
    ),
    "context-without-user": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="anonymous"),
        ("anonymous", "https://10.0.0.1:6443", None),
    ),
}


@pytest.mark.parametrize("case", list(KUBES))
def test_kubernetes_blocks_convert_to_a_kube_cluster_of_one_context(case: str) -> None:
    make, (context, server, token) = KUBES[case]
    kube = to_kube_cluster(make(), "source")
    assert isinstance(kube.kubeconfig, SecretStr) and kube.context == context and not kube.in_cluster
    text = kube.kubeconfig.get_secret_value()
    config = yaml.safe_load(text)
    assert [c["name"] for c in config["contexts"]] == [context] and config["current-context"] == context
    assert [c["cluster"]["server"] for c in config["clusters"]] == [server]
    others = {TOKEN, OTHER_TOKEN} - {token}
    assert not any(t in text for t in others), "only the chosen context's user is kept"
    client = kube.api_client()  # the converted block builds a working client configuration
    assert client.configuration.host == server
    assert client.configuration.api_key.get("BearerToken") == (f"Bearer {token}" if token else None)
    assert TOKEN not in repr(kube)


def test_credentials_without_a_cluster_config_mean_the_pods_service_account() -> None:
    kube = to_kube_cluster(KubernetesCredentials(), "target")
    assert kube.in_cluster and kube.kubeconfig is None
    own = KubeCluster(in_cluster=True)
    assert to_kube_cluster(own, "target") is own


#: id -> (block factory, the field the InputError names)
KUBE_ERRORS: dict[str, tuple[Callable[[], Any], str]] = {
    "exec-plugin": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="eks"),
        "source.config.users['eks'].user.exec",
    ),
    "auth-provider": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="gke"),
        "source.config.users['gke'].user.auth-provider",
    ),
    "unknown-context": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="staging"),
        "source.context_name",
    ),
    "context-of-an-undefined-cluster": (
        lambda: KubernetesClusterConfig(config=_kubeconfig(), context_name="dangling"),
        "source.config",
    ),
    "not-a-kubeconfig": (
        lambda: KubernetesClusterConfig(config={"token": TOKEN}, context_name="prod"),
        "source.config",
    ),
    "nested-exec-plugin": (
        lambda: KubernetesCredentials(
            cluster_config=KubernetesClusterConfig(config=_kubeconfig(), context_name="eks")
        ),
        "source.cluster_config.config.users['eks'].user.exec",
    ),
    "an-s3-block": (lambda: _minio(), "source"),
}


@pytest.mark.parametrize("case", list(KUBE_ERRORS))
def test_unsupported_kubeconfigs_name_the_field_and_never_the_token(case: str) -> None:
    make, field = KUBE_ERRORS[case]
    with pytest.raises(InputError) as err:
        to_kube_cluster(make(), "source")
    assert err.value.field == field and "Fix:" in str(err.value)
    for secret in (TOKEN, OTHER_TOKEN, SECRET):
        assert secret not in str(err.value)


def test_flow_parameters_offer_the_prefect_blocks() -> None:
    """The UI form (Prefect's parameter schema) lets the user pick any of the accepted block types."""
    from flows.bucket_mirror import bucket_mirror
    from flows.etcd_migration import etcd_stretch_migration
    from flows.resource_backup import resource_backup

    kube_slugs = {"stateferry-kube-cluster", "kubernetes-cluster-config", "kubernetes-credentials"}
    store_slugs = {"stateferry-object-store", "aws-credentials", "minio-credentials", "s3-bucket"}
    for flow, params in (
        (resource_backup, {"source": kube_slugs, "object_store": store_slugs}),
        (bucket_mirror, {"source": store_slugs, "destination": store_slugs}),
        (etcd_stretch_migration, {"source": kube_slugs, "target": kube_slugs}),
    ):
        schema = parameter_schema(flow).model_dump()
        for name, slugs in params.items():
            options = schema["properties"][name]["anyOf"]
            refs = [o["$ref"].rsplit("/", 1)[-1] for o in options if "$ref" in o]
            offered = {schema["definitions"][r]["block_type_slug"] for r in refs}
            assert offered == slugs, (flow.name, name)
            assert {"type": "string"} in options  # a saved block's name
    assert "bucket" not in parameter_schema(resource_backup).model_dump().get("required", [])


# --------------------------------------------------------------------------------------------------
# saved references (the Prefect server)


def test_references_of_the_wrong_type_or_missing_are_named(prefect_server: Any, s3_a: Any) -> None:
    name = f"compat-ref-{uuid.uuid4().hex[:8]}"
    endpoint = AwsClientParameters(endpoint_url=f"http://{s3_a.endpoint}")
    MinIOCredentials(
        minio_root_user=s3_a.access_key, minio_root_password=s3_a.secret_key, aws_client_parameters=endpoint
    ).save(name)
    ref = resolve_store(f"minio-credentials/{name}", "object_store")
    assert ref.store.endpoint == s3_a.endpoint and ref.bucket is None
    cases: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: resolve_kube(f"minio-credentials/{name}", "source"), "source", "not a cluster"),
        (lambda: resolve_store(f"aws-credentials/{name}", "object_store"), "object_store", "cannot load"),
        (lambda: resolve_store(f"no-such-type/{name}", "object_store"), "object_store", "cannot load"),
        (lambda: resolve_store(name, "object_store"), "object_store", "no saved ObjectStore"),
        (lambda: resolve_kube(f"a/{name}/x", "target"), "target", "not <block-type-slug>/<name>"),
        (lambda: resolve_kube("", "target"), "target", "is empty"),
    ]
    for call, field, problem in cases:
        with pytest.raises(InputError) as err:
            call()
        assert err.value.field == field and problem in str(err.value), str(err.value)
        assert s3_a.secret_key not in str(err.value)
