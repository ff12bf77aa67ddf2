"""KubeCluster: how to reach one Kubernetes cluster (kubeconfig text + context, or in-cluster).

The kubeconfig is kept as a :class:`~pydantic.SecretStr` (it carries tokens and keys) and parsed
only when a client is built, into a fresh ``Configuration`` -- never the global default one, so
two clusters can be used side by side. (prefect-kubernetes' block stores the kubeconfig as a plain
dict, which leaks its token through the Prefect API; this one does not.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from blocks._validation import closed_block_schema
from stateferry.errors import InputError, translate

if TYPE_CHECKING:
    import kubernetes.client
    import kubernetes.dynamic


def _named(entries: Any, section: str) -> dict[str, Any]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise InputError("kubeconfig", f"'{section}' is not a list", "use a kubeconfig as written by kubectl")
    named: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError("kubeconfig", f"an entry of '{section}' has no name", "give every entry a name")
        named[entry["name"]] = entry
    return named


def parse_kubeconfig(text: str, context: str | None) -> tuple[dict[str, Any], str]:
    """Parse kubeconfig text and check that the context, its cluster and its user exist.

    Args:
        text: The kubeconfig YAML.
        context: The context to use; None = the file's ``current-context``.

    Returns:
        The parsed kubeconfig and the name of the context to use.

    Raises:
        InputError: Naming ``kubeconfig`` or ``context`` and the fix. The text itself is never quoted.
    """
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(
            "kubeconfig", f"is not valid YAML{where}", "paste the output of `kubectl config view --raw`"
        ) from None
    if not isinstance(config, dict) or "clusters" not in config or "contexts" not in config:
        raise InputError(
            "kubeconfig",
            "is not a kubeconfig (no 'clusters'/'contexts')",
            "paste the output of `kubectl config view --raw --minify --context NAME`",
        )
    contexts = _named(config.get("contexts"), "contexts")
    clusters = _named(config.get("clusters"), "clusters")
    users = _named(config.get("users"), "users")
    name = context or config.get("current-context")
    if not name:
        raise InputError(
            "context",
            "no context given and the kubeconfig has no current-context",
            f"set context to one of {sorted(contexts)}",
        )
    if name not in contexts:
        raise InputError(
            "context", f"context {name!r} is not in the kubeconfig", f"use one of {sorted(contexts)}"
        )
    spec = contexts[name].get("context") or {}
    cluster_name = spec.get("cluster")
    if cluster_name not in clusters:
        raise InputError(
            "kubeconfig",
            f"context {name!r} names cluster {cluster_name!r}, which is not defined",
            "add the cluster entry",
        )
    server = (clusters[cluster_name].get("cluster") or {}).get("server")
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        raise InputError(
            "kubeconfig",
            f"cluster {cluster_name!r} has no http(s) server URL",
            "set clusters[].cluster.server",
        )
    user_name = spec.get("user")
    if user_name is not None and user_name not in users:
        raise InputError(
            "kubeconfig",
            f"context {name!r} names user {user_name!r}, which is not defined",
            "add the user entry",
        )
    return config, name


class KubeCluster(Block):
    """A Kubernetes cluster: kubeconfig text (secret) plus context name, or in-cluster service account.

    The block only builds clients (:meth:`api_client`, :meth:`dynamic_client`); it does no work.
    """

    _block_type_name = "Stateferry Kube Cluster"
    _description = "A Kubernetes cluster: kubeconfig text (kept secret) and context, or in-cluster."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    kubeconfig: SecretStr | None = Field(default=None, description="Kubeconfig YAML text (kept secret).")
    context: str | None = Field(default=None, description="Context name; default: the current-context.")
    in_cluster: bool = Field(
        default=False, description="Use the pod's service account instead of a kubeconfig."
    )

    @model_validator(mode="after")
    def _check_source(self) -> KubeCluster:
        if self.in_cluster:
            if self.kubeconfig is not None or self.context is not None:
                raise InputError(
                    "in_cluster",
                    "in_cluster=True excludes kubeconfig/context",
                    "set either in_cluster or kubeconfig",
                )
            return self
        if self.kubeconfig is None:
            raise InputError(
                "kubeconfig",
                "is missing (and in_cluster is False)",
                "paste a kubeconfig or set in_cluster=True",
            )
        if self.context is not None and not self.context.strip():
            raise InputError("context", "is empty", "give a context name or leave it unset")
        parse_kubeconfig(self.kubeconfig.get_secret_value(), self.context)
        return self

    @property
    def context_name(self) -> str | None:
        """The context actually used (None in-cluster)."""
        if self.in_cluster or self.kubeconfig is None:
            return None
        return parse_kubeconfig(self.kubeconfig.get_secret_value(), self.context)[1]

    def api_client(self) -> kubernetes.client.ApiClient:
        """Build an ``ApiClient`` on a fresh ``Configuration`` (the global default is never touched)."""
        import kubernetes.client
        import kubernetes.config

        try:
            if self.in_cluster:
                configuration = kubernetes.client.Configuration()
                kubernetes.config.load_incluster_config(client_configuration=configuration)
                return kubernetes.client.ApiClient(configuration)
            assert self.kubeconfig is not None  # guaranteed by validation
            config, context = parse_kubeconfig(self.kubeconfig.get_secret_value(), self.context)
            return kubernetes.config.new_client_from_config_dict(
                config, context=context, persist_config=False
            )
        except kubernetes.config.ConfigException as exc:
            if self.in_cluster:
                raise InputError(
                    "in_cluster",
                    f"no in-cluster service account ({exc})",
                    "run inside a pod, or give a kubeconfig",
                ) from exc
            raise InputError(
                "kubeconfig",
                f"context {self.context_name!r} cannot be loaded ({exc})",
                "fix the kubeconfig (credentials, certificates, auth plugins) or pick another context",
            ) from exc
        except Exception as exc:
            raise translate(exc, context="building a Kubernetes client") from exc

    def dynamic_client(self) -> kubernetes.dynamic.DynamicClient:
        """Build a ``DynamicClient`` (runs API discovery against the cluster)."""
        import kubernetes.dynamic

        return kubernetes.dynamic.DynamicClient(self.api_client())
