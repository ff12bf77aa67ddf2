"""Options of the Kubernetes resource flows as pydantic models (each flow's ``options`` parameter):
``resource_backup``, ``resource_restore`` and ``app_migration``.

Pure: the checks the flows ran on their parameters before reading a cluster (names, label selector,
mappings, retention, quiesce mode, transforms and hooks syntax), as validators raising
:class:`~stateferry.errors.InputError` named after the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from planning.archive_layout import validate_backup_name, validate_prefix, validate_retention
from planning.flow_options import FlowOptions
from planning.hooks import parse_hooks
from planning.mover_pod import WORKER_IMAGE
from planning.option_fields import checked
from planning.resources import Selection, parse_mapping
from planning.transforms import parse_transform_spec
from stateferry.errors import InputError

__all__ = [
    "DEFAULT_PREFIX",
    "DOCS",
    "AppMigrationOptions",
    "ResourceBackupOptions",
    "ResourceRestoreOptions",
]

DOCS = "docs/resource_backup.md (parameters)"
#: Key prefix of resource backups in their bucket.
DEFAULT_PREFIX = "resource-backups"

_Mapping = dict[str, str] | str | None
_Name = Annotated[str, checked(validate_backup_name)]
_ArchivePrefix = Annotated[str, Field(description="Key prefix of the archives in the bucket.")]
_MoverEndpoint = Annotated[
    str | None,
    Field(description="Object-store URL as the cluster's pods reach it (default: the block's URL)."),
]
_MoverImage = Annotated[str, Field(min_length=1, description="Image of the data-mover Jobs.")]


class _Archive(FlowOptions):
    bucket: str | None = Field(
        default=None,
        min_length=1,
        description="Bucket of the archives (created if missing); default: the S3Bucket block's bucket.",
    )

    @field_validator("prefix", check_fields=False)
    @classmethod
    def _prefix(cls, value: str) -> str:
        validate_prefix(value)
        return value

    @field_validator("namespace_mapping", "storage_class_mapping", check_fields=False)
    @classmethod
    def _mapping(cls, value: _Mapping, info: ValidationInfo) -> _Mapping:
        parse_mapping(value, str(info.field_name))
        return value


class ResourceBackupOptions(_Archive):
    """What ``resource_backup`` takes from the cluster, where it keeps it and for how long."""

    backup_name: _Name | None = Field(
        default=None, description="Archive name; default `backup-<UTC timestamp>`."
    )
    include_namespaces: list[str] | None = Field(
        default=None,
        description="Namespaces to take; empty = all but kube-system, kube-public, kube-node-lease.",
    )
    exclude_namespaces: list[str] | None = Field(default=None, description="Namespaces never taken.")
    label_selector: str = Field(
        default="", description="Only objects with matching labels, e.g. `app=wordpress`."
    )
    include_kinds: list[str] | None = Field(
        default=None, description="Only these kinds or plurals (`ConfigMap`, `deployments.apps`)."
    )
    exclude_kinds: list[str] | None = Field(default=None, description="Never these kinds.")
    include_cluster_resources: bool | None = Field(
        default=None,
        description="True = every cluster-scoped type; False = none; empty = those the namespaces need.",
    )
    prefix: _ArchivePrefix = DEFAULT_PREFIX
    keep_last: int | None = Field(
        default=None,
        ge=1,
        description="Retention after a successful backup: keep the newest N archives of this schedule.",
    )
    ttl_days: float | None = Field(
        default=None,
        ge=1,
        description="Retention: delete this schedule's archives older than this many days.",
    )
    allow_empty: bool = Field(
        default=False, description="Accept a backup that selects no object (otherwise an error)."
    )
    include_volumes: bool = Field(
        default=False, description="Also copy the files of every selected PVC with data-mover Jobs."
    )
    cluster_name: str = Field(
        default="source", description="How the source is named in the manifest and messages."
    )
    mover_endpoint: _MoverEndpoint = None
    mover_image: _MoverImage = WORKER_IMAGE

    @model_validator(mode="after")
    def _selection(self) -> ResourceBackupOptions:
        self.selection()
        validate_retention(self.keep_last, self.ttl_days)
        return self

    def selection(self) -> Selection:
        """The validated selection (namespaces, label selector, kinds, cluster-scoped resources)."""
        return Selection.build(
            include_namespaces=self.include_namespaces,
            exclude_namespaces=self.exclude_namespaces,
            label_selector=self.label_selector,
            include_kinds=self.include_kinds,
            exclude_kinds=self.exclude_kinds,
            include_cluster_resources=self.include_cluster_resources,
        )


class ResourceRestoreOptions(_Archive):
    """Which backup ``resource_restore`` restores, what of it, and how."""

    backup_name: _Name = Field(description="Which backup.")
    restore_name: _Name | None = Field(
        default=None,
        description="Recorded in the `stateferry.io/restore-name` label (default "
        "`<backup>-restore-<timestamp>`).",
    )
    namespace_mapping: _Mapping = Field(default=None, description='`{"cms": "cms-dr"}` or `"cms:cms-dr"`.')
    storage_class_mapping: _Mapping = Field(default=None, description='`{"fast": "standard"}`.')
    existing_resource_policy: Literal["skip", "update"] = Field(
        default="skip",
        description="`skip`: leave existing objects alone, report their diff; `update`: replace them with "
        "the backup's version (asks for approval).",
    )
    include_namespaces: list[str] | None = Field(default=None, description="Restore only these namespaces.")
    include_kinds: list[str] | None = Field(default=None, description="Restore only these namespaced kinds.")
    exclude_kinds: list[str] | None = Field(default=None, description="Never restore these kinds.")
    include_cluster_kinds: list[str] | None = Field(
        default=None,
        description="Cluster-scoped kinds to restore (`CustomResourceDefinition`, `StorageClass`, ...); none "
        "by default. Restoring any asks for approval.",
    )
    allow_rbac_and_admission: bool = Field(
        default=False,
        description="Also restore ClusterRoles/-Bindings, RoleBindings granting subjects outside their "
        "namespace, admission webhooks and policies, CRDs with a conversion webhook, hostPath PVs.",
    )
    keep_node_ports: bool = Field(
        default=False, description="Keep Service nodePorts (default: the target allocates new ones)."
    )
    dry_run: bool = Field(
        default=False, description="Only report, object by object, what would change and the diff."
    )
    fail_on_error: bool = Field(
        default=True, description="End the run failed (after the report) if any object failed."
    )
    restore_volumes: bool = Field(
        default=True,
        description="Fill restored PVCs with the backup's volume data before the workloads start.",
    )
    prefix: _ArchivePrefix = DEFAULT_PREFIX
    cluster_name: str = Field(default="target", description="How the target is named in the report.")
    mover_endpoint: _MoverEndpoint = None
    mover_image: _MoverImage = WORKER_IMAGE


class AppMigrationOptions(_Archive):
    """Which namespaces ``app_migration`` moves, with what, and how the application is stopped."""

    namespaces: list[str] = Field(
        min_length=1, description="Namespaces to migrate (must exist in the source)."
    )
    migration_name: _Name | None = Field(
        default=None, description="Name of the migration (labels, archive); default `migration-<timestamp>`."
    )
    include_resources: bool = Field(
        default=True, description="Migrate the Kubernetes objects (off: only PVCs and data)."
    )
    include_volumes: bool = Field(default=True, description="Copy PVC data with data-mover Jobs.")
    start_applications: bool = Field(
        default=True,
        description="Off: Deployments/StatefulSets arrive with 0 replicas (count kept in "
        "`stateferry.io/migration-replicas`) until activated.",
    )
    namespace_mapping: _Mapping = Field(default=None, description='`{"old": "new"}` or `"old:new,..."`.')
    storage_class_mapping: _Mapping = Field(default=None, description='`{"old": "new"}` or `"old:new,..."`.')
    label_selector: str = Field(default="", description="Only objects with matching labels.")
    existing_resource_policy: Literal["skip", "update"] = Field(
        default="skip", description="For objects already in the target."
    )
    approve_activation: bool = Field(
        default=False,
        description="With start_applications off: pause for an approval, then activate (instead of the "
        "activate flow).",
    )
    prefix: str = Field(default="migrations", description="Key prefix in the bucket.")
    quiesce: Literal["none", "scale", "hooks"] = Field(
        default="none",
        description="`none`: one copy while the application runs; `scale`: bulk copy, approval, source "
        "scaled to 0, verified delta; `hooks`: the hooks' pre/post commands instead of scaling.",
    )
    mover_security: Literal["root", "workload", "image"] = Field(
        default="root",
        description="`root` (capabilities the copy needs only), `workload` (the runAsUser/fsGroup of the "
        "pods using each claim) or `image`.",
    )
    exclude_kinds: list[str] | str | None = Field(
        default=None, description="Kinds never migrated (`CronJob`, `cronjobs.batch`, ...)."
    )
    transforms: list[dict[str, Any]] | str | None = Field(
        default=None,
        description='Per-kind field changes: `[{"kind": "Deployment", "path": '
        '"spec.template.spec.containers[0].image", "op": "set", "value": "nginx:1.27"}]`.',
    )
    hooks: list[dict[str, Any]] | str | None = Field(
        default=None,
        description='With quiesce `hooks`: `[{"namespace": "cms", "selector": "app=mysql", "container": '
        '"mysql", "pre": [["fsfreeze", "-f", "/data"]], "post": [["fsfreeze", "-u", "/data"]]}]`.',
    )
    mover_endpoint: _MoverEndpoint = None
    mover_image: _MoverImage = WORKER_IMAGE

    @model_validator(mode="after")
    def _combinations(self) -> AppMigrationOptions:
        if not self.include_resources and not self.include_volumes:
            raise InputError("include_resources", "and include_volumes are both False", "enable at least one")
        Selection.build(include_namespaces=self.namespaces, label_selector=self.label_selector)
        parse_transform_spec(self.exclude_kinds, self.transforms)
        if self.quiesce == "hooks":
            parse_hooks(self.hooks, self.namespaces)
        elif self.hooks:
            raise InputError(
                "hooks", f"are given with quiesce={self.quiesce!r}", "set quiesce='hooks' or drop the hooks"
            )
        return self
