"""``etcd_stretch_migration``'s options as one pydantic model (the flow's ``options`` parameter).

Pure: the name and size checks the migration runs before it reads a cluster, as validators raising
:class:`~stateferry.errors.InputError` named after the field. What needs the clusters (the
namespaces exist, the StatefulSet is found, a run in progress agrees) stays in the preflight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from planning.etcd_layout import check_kube_name
from planning.etcd_stretch import check_target_count
from planning.flow_options import FlowOptions

__all__ = ["DOCS", "EtcdMigrationOptions"]

DOCS = "docs/etcd_migration.md (parameters)"

_ORDINAL_ROOM = len("-0")


class EtcdMigrationOptions(FlowOptions):
    """Which etcd StatefulSet moves where, and how (``etcd_stretch_migration``)."""

    source_namespace: str = Field(
        default="default", description="Namespace of the etcd StatefulSet in the source."
    )
    target_namespace: str | None = Field(
        default=None, description="Namespace in the target (default: the source namespace); must exist."
    )
    statefulset: str = Field(default="etcd", description="The source StatefulSet.")
    service: str | None = Field(
        default=None, description="Its headless Service (default: the StatefulSet's serviceName)."
    )
    new_statefulset: str | None = Field(
        default=None,
        description="The new StatefulSet (default `<statefulset>-main`); its pod names must differ from "
        "the source's, they are the member names.",
    )
    new_service: str | None = Field(
        default=None, description="The new headless Service (default: new_statefulset)."
    )
    target_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Members in the target (default: the source's); odd unless allow_even_size.",
    )
    dns_provider: Literal["coredns", "deckhouse"] = Field(
        default="coredns",
        description="`coredns` (the kube-system/coredns Corefile hosts block) or `deckhouse` "
        "(ModuleConfig kube-dns spec.settings.hosts).",
    )
    keep_revisions: int = Field(
        default=1000, ge=0, description="Revisions kept when compacting before the migration."
    )
    use_learners: bool = Field(
        default=True, description="Add new members as learners (promoted once caught up)."
    )
    dry_run: bool = Field(default=False, description="Preflight and plan only.")
    allow_even_size: bool = Field(default=False, description="Accept an even target_replicas.")
    rollback: bool = Field(
        default=False, description="Undo a migration that has not passed the client cutover."
    )
    delete_pvcs: bool = Field(default=False, description="Also delete the old members' PVCs at cleanup.")
    keep_source_dns: bool = Field(
        default=False,
        description="Keep the source cluster's DNS entries for the new members after cleanup (for "
        "source-side clients that use those names).",
    )
    source_endpoints: list[str] | None = Field(
        default=None,
        description="etcd client endpoints reachable from where the flow runs, for the preflight "
        "(default: the source pods' IPs, or the LoadBalancers of a run in progress).",
    )
    target_image: str | None = Field(
        default=None,
        description="etcd image for the new members' version check (default: the source's image).",
    )
    catch_up_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a joining member may take to start and catch up before it is rolled back.",
    )
    source_lb_annotations: dict[str, str] | None = Field(
        default=None,
        description="Annotations of the per-member LoadBalancer Services in the source (cloud settings).",
    )
    target_lb_annotations: dict[str, str] | None = Field(
        default=None, description="Annotations of the per-member LoadBalancer Services in the target."
    )
    rename_labels: bool = Field(
        default=False,
        description="Rename `<statefulset>` to `<new_statefulset>` in the new pods' labels, selector and "
        "affinity (default: the new pods keep the source pods' labels).",
    )
    dns_check_image: str | None = Field(
        default=None,
        description="Image of the DNS check Job (runs `getent hosts`; default: the source etcd image; "
        "e.g. debian:bookworm-slim for distroless images).",
    )
    tls_ca_secret: str | None = Field(
        default=None,
        description="TLS etcd: a Secret in the target namespace holding the CA (tls.crt, tls.key) that "
        "issues the new members' certificate.",
    )
    tls_issuer: str | None = Field(
        default=None, description="A cert-manager Issuer instead (refused while not supported)."
    )

    @field_validator("source_namespace", "target_namespace", "service", "new_service", "tls_ca_secret")
    @classmethod
    def _name(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_kube_name(str(info.field_name), value)

    @field_validator("statefulset", "new_statefulset")
    @classmethod
    def _statefulset(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_kube_name(str(info.field_name), value, _ORDINAL_ROOM)

    @model_validator(mode="after")
    def _combinations(self) -> EtcdMigrationOptions:
        if self.target_replicas is not None:
            check_target_count(self.target_replicas, self.allow_even_size)
        return self

    @property
    def target_ns(self) -> str:
        """The target namespace (default: the source's)."""
        return self.target_namespace or self.source_namespace

    @property
    def new_sts(self) -> str:
        """The new StatefulSet's name (default ``<statefulset>-main``)."""
        return self.new_statefulset or f"{self.statefulset}-main"

    @property
    def new_svc(self) -> str:
        """The new headless Service (default: the new StatefulSet's name)."""
        return self.new_service or self.new_sts
