"""Steps of ``app_migration`` kept out of the flow module: the transform step with its plan
artifact, and phase 2 of a quiesce (stop the application by scaling or by exec hooks, copy and
verify the delta, put the source back on failure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from planning.app_migration import bulk_checkpoint, parse_bulk_checkpoint
from planning.hooks import Hook
from planning.transforms import TransformSpec, apply_transforms
from tasks.app_cutover import deactivate_workloads, reactivate_workloads, wait_claims_released
from tasks.archive_store import ensure_bucket, get_json, put_json
from tasks.exec_hooks import HookFailed, hook_pods, run_hook_phase
from tasks.volume_mover import VolumeResult, fill_volumes, pack_volumes, volume_key

__all__ = ["DeltaCopy", "quiesce_and_sync", "resumed_bulk", "save_bulk_checkpoint", "transformed"]


def _checkpoint_key(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}/quiesce-bulk.json"


def save_bulk_checkpoint(
    store: ObjectStore, bucket: str, prefix: str, name: str, vols: list[VolumeResult]
) -> None:
    """Record that every bulk copy of a quiesce is verified in the target (before the stop)."""
    put_json(store, bucket, _checkpoint_key(prefix, name), bulk_checkpoint([v.to_dict() for v in vols]))


def resumed_bulk(
    store: ObjectStore, bucket: str, prefix: str, name: str, claims: list[tuple[str, str]]
) -> list[VolumeResult]:
    """The bulk copies of an earlier run of this migration (same claims), or ``[]`` to copy them.

    Only checksums and sizes are taken from the stored record (validated); keys are recomputed.
    """
    ensure_bucket(store, bucket)
    got = parse_bulk_checkpoint(get_json(store, bucket, _checkpoint_key(prefix, name)), claims)
    if not got:
        return []
    get_run_logger().info("resuming migration %s after its bulk copy (%d volumes)", name, len(got))
    out = []
    for ns, pvc in claims:
        rec = got[(ns, pvc)]
        out.append(
            VolumeResult(
                ns, pvc, volume_key(prefix, name, ns, pvc), status="migrated successfully",
                reason="bulk copy of an earlier run (resumed)", source_sha256=rec["sha256_tree"],
                target_sha256=rec["target_sha256"], files=rec["files"], bytes=rec["bytes"],
                target_namespace=rec["target_namespace"], target_pvc=rec["target_pvc"],
            )
        )  # fmt: skip
    return out


def transformed(
    objects: list[dict[str, Any]], spec: TransformSpec, name: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The pure transform step (exclusions, transforms) and its plan artifact, before any change."""
    out, rows = apply_transforms(objects, spec)
    if spec:
        create_table_artifact(
            key="app-migration-plan",
            table=rows or [{"object": "-", "change": "nothing excluded or transformed"}],
            description=f"migration {name}: excluded kinds and transforms (applied to the target)",
        )
    return out, rows


def _stop_text(name: str, bulk: int, namespaces: list[str], hooks: list[Hook] | None) -> str:
    head = (
        f"# Stop the application of migration `{name}`\n\n"
        f"The bulk copy of {bulk} volume(s) is in the target. "
    )
    if hooks is None:
        return head + (
            f"Approving scales the Deployments/StatefulSets of {', '.join(namespaces)} in the source to 0 "
            "and suspends their CronJobs (counts recorded in `stateferry.io/source-replicas`), then copies "
            "only what changed since the bulk copy.\n\nRollback: the `reactivate` flow on the source "
            "(done automatically if the delta fails)."
        )
    lines = [
        f"- hooks[{h.index}]: pods `{h.selector}` in {h.namespace}, container `{h.container}`: "
        f"{len(h.pre)} pre / {len(h.post)} post command(s) ({', '.join(repr(a[0]) for a in h.pre + h.post)})"
        for h in hooks
    ]
    return head + (
        "Approving runs the pre exec hooks in the source's pods, copies only what changed since the bulk "
        "copy, then runs the post hooks (also when the delta fails). A failing pre hook stops here: the "
        "post hooks of the pods already quiesced run and nothing else changes.\n\n" + "\n".join(lines)
    )


@dataclass(frozen=True)
class DeltaCopy:
    """What phase 2 copies: the source's claims again (level 1 over the ``bulk`` copies) into the
    target's, with the data-mover Jobs' endpoint, image and security."""

    src: KubeCluster
    dst: KubeCluster
    store: ObjectStore
    bucket: str
    prefix: str
    name: str
    claims: list[tuple[str, str]]
    bulk: list[VolumeResult]
    ns_map: dict[str, str]
    run_id: str
    endpoint: str | None
    image: str
    security: str

    def pack(self) -> list[VolumeResult]:
        """Pack what changed in the source's claims since the bulk copy."""
        return pack_volumes(
            self.src, "source", self.store, self.bucket, self.prefix, self.name, self.claims, self.run_id,
            self.endpoint, self.image, level=1, security=self.security, previous=self.bulk,
        )  # fmt: skip

    def fill(self, delta: list[VolumeResult]) -> list[VolumeResult]:
        """Apply the packed delta to the target's claims (and verify it); the rest keep their status."""
        ok = [v for v in delta if v.status == "packed"]
        not_packed = [v for v in delta if v.status != "packed"]
        filled = fill_volumes(
            self.dst, "target", self.store, self.bucket, ok, self.ns_map, self.run_id, self.endpoint,
            self.image, security=self.security,
        )  # fmt: skip
        return filled + not_packed


def quiesce_and_sync(
    transfer: DeltaCopy,
    namespaces: list[str],
    auto_approve: bool,
    hooks: list[Hook] | None = None,
) -> tuple[list[VolumeResult], list[dict[str, Any]]]:
    """Phase 2: approval, stop the source (scale to 0, or the pre exec ``hooks``), copy and verify
    the delta (post hooks right after the source's delta is packed); put the source back on failure.

    Args:
        transfer: The delta to copy.
        namespaces: The source namespaces whose workloads stop.
        auto_approve: Stop without asking.
        hooks: Quiesce by these exec hooks instead of scaling.

    Returns:
        The volumes' results and what was stopped (workload rows, or hook runs).

    Raises:
        HookFailed: a pre hook failed (after the post hooks of the pods already quiesced ran) or a
            post hook failed; nothing was scaled.
    """
    from tasks.approvals import request_approval

    pods = hook_pods(transfer.src, hooks) if hooks is not None else {}  # fails before the approval
    request_approval(
        "stop-application",
        _stop_text(transfer.name, len(transfer.bulk), namespaces, hooks),
        key=f"stop-{transfer.name}",
        auto_approve=auto_approve,
    )
    if hooks is not None:
        return _sync_with_hooks(transfer, hooks, pods)
    src = transfer.src
    stopped = deactivate_workloads(src, namespaces)
    try:
        wait_claims_released(src, transfer.claims)
        result = transfer.fill(transfer.pack())
    except Exception:
        reactivate_workloads(src, namespaces)
        raise
    if any(v.status != "migrated successfully" for v in result):
        reactivate_workloads(src, namespaces)
    return result, stopped


def _sync_with_hooks(
    transfer: DeltaCopy, hooks: list[Hook], pods: dict[int, list[str]]
) -> tuple[list[VolumeResult], list[dict[str, Any]]]:
    src = transfer.src
    try:
        runs = run_hook_phase(src, hooks, pods, "pre")
    except HookFailed as exc:
        done = {(r.hook, r.pod) for r in exc.runs if r.exit_code == 0}
        undo = {h.index: [p for p in pods.get(h.index, []) if (h.index, p) in done] for h in hooks}
        post_note = ""
        try:
            run_hook_phase(src, hooks, undo, "post")
        except HookFailed as post_exc:
            post_note = f" The post hooks of the pods already quiesced failed too: {post_exc}"
        raise HookFailed(
            f"quiesce stopped before the delta copy: {exc}.{post_note} Fix: correct the hook or the "
            "application and re-run the migration (the bulk copy is kept); nothing was scaled down",
            exc.runs,
        ) from None
    try:
        delta = transfer.pack()
    finally:
        runs += run_hook_phase(src, hooks, pods, "post")
    return transfer.fill(delta), [r.to_dict() for r in runs]
