"""Table-driven tests of the pure stretch-migration planner (no servers)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from etcd_migration.seed import SEED_STS
from planning.etcd import CurrentMember, quorum
from planning.etcd_dns_hosts import coredns_with_hosts, foreign_host_names, host_entries, module_config_hosts
from planning.etcd_layout import Layout, derive_name_form, dns_names
from planning.etcd_manifests import (
    command_initial_cluster,
    lb_service_manifest,
    new_headless_service_manifest,
    new_statefulset_manifest,
    rewrite_etcd_command,
    rewrite_host_refs,
)
from planning.etcd_stretch import (
    REMOVAL_ORDER,
    Observed,
    RemovalAction,
    StepKind,
    check_removal_order,
    check_target_count,
    check_versions,
    image_version,
    next_step,
    plan_markdown,
    removal_trace,
    simulate_plan,
)
from sandbox.runtime.dns import DEFAULT_COREFILE, parse_corefile_hosts
from stateferry.errors import InputError, PreconditionFailed

L = Layout("prod", "prod", "etcd", "etcd", "etcd-main", "etcd-main", 3, 3)
OLD = [CurrentMember(i + 1, f"etcd-{i}", (L.old_peer_url(f"etcd-{i}"),)) for i in range(3)]
IC_JOIN0 = (
    "etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380,etcd-2=http://etcd-2.etcd:2380,"
    "etcd-main-0=http://etcd-main-0.etcd-main:2380"
)
FINAL = (
    "etcd-main-0=http://etcd-main-0.etcd-main:2380,etcd-main-1=http://etcd-main-1.etcd-main:2380,"
    "etcd-main-2=http://etcd-main-2.etcd-main:2380"
)


def new(i: int, *, learner: bool = False, started: bool = True, mid: int | None = None) -> CurrentMember:
    pod = f"etcd-main-{i}"
    return CurrentMember(mid or 10 + i, pod if started else "", (L.new_peer_url(pod),), learner)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "etcd --name=$HOSTNAME --initial-advertise-peer-urls=http://$HOSTNAME.etcd:2380 "
            "--initial-cluster etcd-0=http://etcd-0.etcd:2380 --advertise-client-urls=http://$HOSTNAME.etcd:2379",
            "etcd --name=$HOSTNAME --initial-advertise-peer-urls=http://$HOSTNAME.etcd-main:2380 "
            f"--initial-cluster {IC_JOIN0} --initial-cluster-state=existing "
            "--advertise-client-urls=http://$HOSTNAME.etcd-main:2379",
        ),
        (
            "etcd --initial-cluster=a=http://a:2380 --initial-cluster-state new --initial-cluster-token=t",
            f"etcd --initial-cluster={IC_JOIN0} --initial-cluster-state=existing --initial-cluster-token=t",
        ),
        ("echo ${HOSTNAME}.etcd.svc", "echo ${HOSTNAME}.etcd-main.svc"),
        ("echo $HOSTNAME.etcdx", "echo $HOSTNAME.etcdx"),  # another service name is left alone
        ("-c", "-c"),
    ],
)
def test_rewrite_etcd_command(text: str, expected: str) -> None:
    assert rewrite_etcd_command(text, L, IC_JOIN0) == expected


def test_new_statefulset_is_the_seed_renamed_with_the_join_flags() -> None:
    seed = yaml.safe_load(SEED_STS)
    sts = new_statefulset_manifest(
        seed, L, replicas=1, initial_cluster_value=IC_JOIN0, partition=0, run_id="r1"
    )
    spec = sts["spec"]
    assert sts["metadata"]["name"] == "etcd-main" and sts["metadata"]["namespace"] == "prod"
    assert sts["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "stateferry"
    assert sts["metadata"]["labels"]["stateferry.io/flow-run-id"] == "r1"
    assert spec["replicas"] == 1 and spec["serviceName"] == "etcd-main"
    # as in the seed: the new pods keep the source pods' labels, so does the selector (other cluster)
    assert spec["selector"]["matchLabels"] == {"app": "etcd"}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "etcd",
        "app.kubernetes.io/managed-by": "stateferry",
        "stateferry.io/etcd-migration": "prod.etcd",
    }
    expr = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert expr[0]["labelSelector"]["matchExpressions"][0]["values"] == ["etcd"]
    script = spec["template"]["spec"]["containers"][0]["args"][1]
    assert f"--initial-cluster {IC_JOIN0} --initial-cluster-state=existing" in script
    assert "--initial-advertise-peer-urls=http://$HOSTNAME.etcd-main:2380" in script
    assert "--initial-cluster-token=etcd-cortex-prod" in script
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["volumeClaimTemplates"][0]["metadata"] == {"name": "data"}
    assert command_initial_cluster(sts) == IC_JOIN0
    assert seed["spec"]["serviceName"] == "etcd"  # the input is not modified


def test_statefulset_without_initial_cluster_is_refused() -> None:
    seed = yaml.safe_load(SEED_STS)
    seed["spec"]["template"]["spec"]["containers"][0]["args"] = ["-c", "etcd --name=$HOSTNAME"]
    with pytest.raises(PreconditionFailed, match="--initial-cluster"):
        new_statefulset_manifest(seed, L, replicas=1, initial_cluster_value=IC_JOIN0, partition=0, run_id="")


def test_lb_service_selects_one_pod_and_publishes_not_ready() -> None:
    svc = lb_service_manifest("etcd-main-0", "prod", L, run_id="r", annotations={"a": "b"})
    assert svc["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": "etcd-main-0"}
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in svc["spec"]["ports"]] == [2380, 2379]
    assert svc["metadata"]["annotations"] == {"a": "b"}


ENTRIES = host_entries({"etcd-main-1": "10.0.0.2", "etcd-main-0": "10.0.0.1"}, "etcd-main", "prod")
USER_HOSTS = DEFAULT_COREFILE.replace(
    "    kubernetes ",
    "    hosts {\n       10.9.9.9 user.example\n       fallthrough\n    }\n    kubernetes ",
    1,
)


@pytest.mark.parametrize(
    "corefile", [DEFAULT_COREFILE, USER_HOSTS], ids=["no-hosts-block", "user-hosts-block"]
)
def test_coredns_hosts_section_is_idempotent_and_removable(corefile: str) -> None:
    once = coredns_with_hosts(corefile, "k", ENTRIES)
    assert coredns_with_hosts(once, "k", ENTRIES) == once
    parsed = {(h.ip, h.names) for h in parse_corefile_hosts(once)}
    assert (
        "10.0.0.1",
        (
            "etcd-main-0",
            "etcd-main-0.etcd-main",
            "etcd-main-0.etcd-main.prod",
            "etcd-main-0.etcd-main.prod.svc",
            "etcd-main-0.etcd-main.prod.svc.cluster.local",
        ),
    ) in parsed
    assert once.count("hosts {") == 1  # one hosts plugin per server block
    other = coredns_with_hosts(once, "other", [("10.1.1.1", ["x"])])
    changed = coredns_with_hosts(other, "k", ENTRIES[:1])
    assert {h.ip for h in parse_corefile_hosts(changed)} >= {"10.0.0.1", "10.1.1.1"}
    assert "10.0.0.2" not in changed
    removed = coredns_with_hosts(coredns_with_hosts(changed, "k", []), "other", [])
    assert removed == corefile


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ([], [{"domain": "a", "ip": "1.1.1.1"}, {"domain": "a.s", "ip": "1.1.1.1"}]),
        (
            [
                {"domain": "user", "ip": "9.9.9.9"},
                {"domain": "old", "ip": "2.2.2.2"},
                {"domain": "a", "ip": "0.0.0.0"},
            ],
            [
                {"domain": "user", "ip": "9.9.9.9"},
                {"domain": "a", "ip": "1.1.1.1"},
                {"domain": "a.s", "ip": "1.1.1.1"},
            ],
        ),
    ],
)
def test_module_config_hosts(current: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    result = module_config_hosts(current, ["old"], [("1.1.1.1", ["a", "a.s"])])
    assert result == expected
    assert module_config_hosts(result, ["old"], [("1.1.1.1", ["a", "a.s"])]) == expected


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("quay.io/coreos/etcd:v3.4.18", (3, 4, 18)),
        ("registry.k8s.io/etcd:3.5.9-0", (3, 5, 9)),
        ("localhost:5000/etcd:v3.4.23@sha256:abc", (3, 4, 23)),
        ("etcd", None),
    ],
)
def test_image_version(image: str, version: tuple[int, int, int] | None) -> None:
    assert image_version(image) == version


@pytest.mark.parametrize(
    ("running", "image", "auth", "warns", "fails"),
    [
        (["3.4.23"] * 3, "quay.io/coreos/etcd:v3.4.18", False, [], None),
        (["3.4.23"], "quay.io/coreos/etcd:v3.5.9", False, [], "same minor version"),
        (["3.4.23", "3.5.1"], "quay.io/coreos/etcd:v3.4.23", False, [], "different minor"),
        (["3.4.20"], "quay.io/coreos/etcd:v3.4.23", False, ["3.4.20-3.4.21"], None),
        (["3.5.5"], "quay.io/coreos/etcd:v3.5.5", True, ["auth enabled"], None),
        (["3.5.5"], "quay.io/coreos/etcd:v3.5.5", False, [], None),
        (["3.4.23"], "etcd:latest", False, ["no version tag"], None),
    ],
)
def test_check_versions(
    running: list[str], image: str, auth: bool, warns: list[str], fails: str | None
) -> None:
    if fails:
        with pytest.raises(PreconditionFailed, match=fails):
            check_versions(running, image, auth_enabled=auth)
        return
    warnings = check_versions(running, image, auth_enabled=auth)
    assert len(warnings) == len(warns)
    for needle, warning in zip(warns, warnings, strict=True):
        assert needle in warning


@pytest.mark.parametrize(
    ("n", "even_ok", "ok"),
    [(3, False, True), (1, False, True), (0, False, False), (4, False, False), (4, True, True)],
)
def test_check_target_count(n: int, even_ok: bool, ok: bool) -> None:
    if ok:
        check_target_count(n, even_ok)
    else:
        with pytest.raises(InputError, match="target_replicas"):
            check_target_count(n, even_ok)


@pytest.mark.parametrize(
    ("observed", "kind", "member", "detail"),
    [
        (
            Observed(tuple(OLD), 1),
            StepKind.ADD_MEMBER,
            "etcd-main-0",
            {"initial_cluster": IC_JOIN0, "replicas": 1},
        ),
        # crash after member add, before the StatefulSet update: deploy it, never add it again
        (
            Observed((*OLD, new(0, learner=True, started=False)), 1),
            StepKind.DEPLOY_MEMBER,
            "etcd-main-0",
            {"initial_cluster": IC_JOIN0, "replicas": 1, "member_id": 10},
        ),
        # deployed and started, still a learner: promote (deploy step is idempotent)
        (
            Observed((*OLD, new(0, learner=True)), 1, 1),
            StepKind.DEPLOY_MEMBER,
            "etcd-main-0",
            {"replicas": 1},
        ),
        (Observed((*OLD, new(0)), 1, 1), StepKind.ADD_MEMBER, "etcd-main-1", {"replicas": 2}),
        (
            Observed((*OLD, new(0), new(1), new(2)), 1, 3),
            StepKind.MOVE_LEADER,
            "etcd-main-0",
            {"member_id": 10},
        ),
        (Observed((*OLD, new(0), new(1), new(2)), 10, 3), StepKind.REMOVE_OLD, "etcd-2", {"replicas": 2}),
        (Observed((OLD[0], new(0), new(1), new(2)), 11, 3), StepKind.REMOVE_OLD, "etcd-0", {"replicas": 0}),
        # a run stopped after member remove of etcd-2, before its pod stopped: stop it first
        (
            Observed((OLD[0], OLD[1], new(0), new(1), new(2)), 10, 3, old_sts_replicas=3),
            StepKind.STOP_OLD,
            "etcd-2",
            {"replicas": 2},
        ),
        (
            Observed((new(0), new(1), new(2)), 11, 3, IC_JOIN0, 2, old_sts_replicas=1),
            StepKind.STOP_OLD,
            "etcd-0",
            {"replicas": 0},
        ),
        (
            Observed((OLD[0], OLD[1], new(0), new(1), new(2)), 10, 3, old_sts_replicas=2),
            StepKind.REMOVE_OLD,
            "etcd-1",
            {"replicas": 1},
        ),
        (
            Observed((new(0), new(1), new(2)), 11, 3, IC_JOIN0, 2),
            StepKind.FINALIZE_STS,
            "",
            {"initial_cluster": FINAL},
        ),
        (Observed((new(0), new(1), new(2)), 11, 3, FINAL, 0, True, True), StepKind.CLEANUP, "", {}),
        (Observed((new(0), new(1), new(2)), 11, 3, FINAL, 0, True, False), StepKind.DONE, "", {}),
    ],
)
def test_next_step(observed: Observed, kind: StepKind, member: str, detail: dict[str, object]) -> None:
    step = next_step(observed, L)
    assert (step.kind, step.member) == (kind, member)
    for key, value in detail.items():
        assert getattr(step, key) == value


@pytest.mark.parametrize(
    ("members", "leader", "message"),
    [
        (
            (*OLD, CurrentMember(99, "stranger", ("http://stranger:2380",))),
            1,
            "neither etcd-N nor etcd-main-N",
        ),
        ((OLD[0], OLD[1], OLD[2], new(0, learner=True), new(1, learner=True)), 1, ""),
    ],
)
def test_next_step_refuses_foreign_members(
    members: tuple[CurrentMember, ...], leader: int, message: str
) -> None:
    if message:
        with pytest.raises(PreconditionFailed, match=message):
            next_step(Observed(members, leader), L)
    else:  # two learners (another tool?): finish the first before anything else
        assert next_step(Observed(members, leader), L).member == "etcd-main-0"


def test_plan_markdown_lists_every_change_with_initial_cluster_and_quorum() -> None:
    text = plan_markdown(L, OLD, 1, warnings=["careful"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    kinds = [r.split("|")[2].strip() for r in rows]
    assert kinds == ["add_member"] * 3 + ["move_leader"] + ["remove_old"] * 3 + ["finalize_sts", "cleanup"]
    assert f"`{IC_JOIN0}`" in rows[0] and rows[0].rstrip(" |").endswith("3")  # 4 voters after promotion
    assert f"`{FINAL}`" in rows[7]
    assert "WARNING: careful" in text


@pytest.mark.parametrize(
    ("corefile", "expected"),
    [
        (DEFAULT_COREFILE, []),
        (coredns_with_hosts(DEFAULT_COREFILE, "k", ENTRIES), []),  # our own section does not count
        (
            coredns_with_hosts(DEFAULT_COREFILE, "other", ENTRIES[:1]),
            ["etcd-main-0", "etcd-main-0.etcd-main"],
        ),
        (USER_HOSTS.replace("user.example", "user.example etcd-main-0.etcd-main"), ["etcd-main-0.etcd-main"]),
    ],
    ids=["none", "own-section", "other-migration", "hand-written"],
)
def test_foreign_host_names(corefile: str, expected: list[str]) -> None:
    assert (
        foreign_host_names(corefile, "k", ["etcd-main-0", "etcd-main-0.etcd-main", "unrelated"]) == expected
    )


SEED_ORDER = (RemovalAction.STOP_POD, RemovalAction.MEMBER_REMOVE)


@pytest.mark.parametrize("voters", range(2, 10))
def test_removal_order_keeps_quorum_for_every_member_count(voters: int) -> None:
    check_removal_order(voters)  # member remove commits with every voter alive, then the pod stops
    assert REMOVAL_ORDER == (RemovalAction.MEMBER_REMOVE, RemovalAction.STOP_POD)
    rows = removal_trace(voters)
    assert rows == [
        (RemovalAction.MEMBER_REMOVE, voters - 1, quorum(voters - 1)),
        (RemovalAction.STOP_POD, voters - 1, quorum(voters - 1)),
    ]
    # the seed's order (scale down, then member remove) only works while voters - 1 >= quorum(voters)
    if voters == 2:
        with pytest.raises(PreconditionFailed, match="1 of 2 voters"):
            check_removal_order(voters, SEED_ORDER)
    else:
        check_removal_order(voters, SEED_ORDER)


@pytest.mark.parametrize("order", [(), (RemovalAction.STOP_POD,), (RemovalAction.MEMBER_REMOVE,) * 2])
def test_removal_order_needs_both_actions(order: tuple[RemovalAction, ...]) -> None:
    with pytest.raises(PreconditionFailed, match="once"):
        check_removal_order(3, order)


def test_removal_of_the_last_voter_is_refused() -> None:
    with pytest.raises(PreconditionFailed, match="no voter"):
        check_removal_order(1)


def _layout(src: int, dst: int) -> Layout:
    return Layout("prod", "prod", "etcd", "etcd", "etcd-main", "etcd-main", src, dst)


@pytest.mark.parametrize(
    ("src", "dst"),
    [(3, 1), (1, 3), (3, 5), (5, 3), (1, 1), (5, 1), (3, 3), (5, 5), (1, 5), (7, 3)],
)
def test_plan_keeps_quorum_for_every_size(src: int, dst: int) -> None:
    layout = _layout(src, dst)
    members = [CurrentMember(i + 1, f"etcd-{i}", (layout.old_peer_url(f"etcd-{i}"),)) for i in range(src)]
    steps = simulate_plan(layout, members, 1)
    kinds = [s.kind for s in steps]
    assert kinds == (
        [StepKind.ADD_MEMBER] * dst
        + [StepKind.MOVE_LEADER]
        + [StepKind.REMOVE_OLD] * src
        + [StepKind.FINALIZE_STS, StepKind.CLEANUP]
    )
    # old members go highest ordinal first; the old StatefulSet shrinks with them
    removals = [s for s in steps if s.kind is StepKind.REMOVE_OLD]
    assert [s.member for s in removals] == [f"etcd-{i}" for i in reversed(range(src))]
    assert [s.replicas for s in removals] == list(reversed(range(src)))
    # voters before each removal: src + dst down to dst + 1; each one keeps quorum with the planned order
    voters = src + dst
    for s in removals:
        check_removal_order(voters)
        assert s.quorum_after == quorum(voters - 1)
        voters -= 1
    assert voters == dst
    # the last removal of an N -> 1 migration leaves 1 of 2 voters under the seed's order
    if dst == 1:
        with pytest.raises(PreconditionFailed):
            check_removal_order(dst + 1, SEED_ORDER)


@pytest.mark.parametrize(
    ("rename", "distinct", "pod_app", "selector", "affinity"),
    [
        (False, False, "etcd", {"app": "etcd"}, "etcd"),
        # next to the source StatefulSet (same cluster and namespace): the selector must not overlap
        (False, True, "etcd", {"app": "etcd", "stateferry.io/etcd-statefulset": "etcd-main"}, "etcd"),
        (True, False, "etcd-main", {"app": "etcd-main"}, "etcd-main"),
    ],
    ids=["keep", "distinct", "rename"],
)
def test_new_pod_labels_and_selectors(
    rename: bool, distinct: bool, pod_app: str, selector: dict[str, str], affinity: str
) -> None:
    layout = replace(L, rename_labels=rename, distinct_selector=distinct)
    seed = yaml.safe_load(SEED_STS)
    seed["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
    spec = new_statefulset_manifest(
        seed, layout, replicas=1, initial_cluster_value=IC_JOIN0, partition=0, run_id=""
    )["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app"] == pod_app
    assert labels["app.kubernetes.io/managed-by"] == "Helm"  # the source pods' own label wins
    assert labels["stateferry.io/etcd-migration"] == "prod.etcd"
    assert spec["selector"]["matchLabels"] == selector
    assert all(labels.get(k) == v for k, v in selector.items())  # the StatefulSet selects its own pods
    expr = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert expr[0]["labelSelector"]["matchExpressions"][0]["values"] == [affinity]
    svc = new_headless_service_manifest(
        {"metadata": {"name": "etcd"}, "spec": {"clusterIP": "None", "selector": {"app": "etcd"}}},
        layout,
        run_id="",
    )
    assert svc["spec"]["selector"] == selector


# ------------------------------------------------------------------------------------- peer URL layouts


@pytest.mark.parametrize(
    ("host", "depth", "domain"),
    [
        ("etcd-0", 1, "cluster.local"),
        ("etcd-0.etcd", 2, "cluster.local"),
        ("etcd-0.etcd.prod", 3, "cluster.local"),
        ("etcd-0.etcd.prod.svc", 4, "cluster.local"),
        ("etcd-0.etcd.prod.svc.cluster.local", 5, "cluster.local"),
        ("etcd-0.etcd.prod.svc.k8s.example.org", 5, "k8s.example.org"),
    ],
)
def test_derive_name_form(host: str, depth: int, domain: str) -> None:
    urls = {f"etcd-{i}": (f"https://{host.replace('etcd-0', f'etcd-{i}', 1)}:12380",) for i in range(3)}
    form = derive_name_form(urls, "etcd", "prod")
    assert (form.scheme, form.peer_port, form.name_depth, form.cluster_domain) == (
        "https",
        12380,
        depth,
        domain,
    )
    layout = replace(L, scheme=form.scheme, peer_port=form.peer_port, name_depth=depth, cluster_domain=domain)
    assert layout.old_peer_url("etcd-0") == f"https://{host}:12380"
    new_host = ".".join(["etcd-main-0", "etcd-main", "prod", "svc", domain][:depth])
    assert layout.new_peer_url("etcd-main-0") == f"https://{new_host}:12380"
    assert layout.new_client_url("etcd-main-0") == f"https://{new_host}:2379"
    # every name a peer may use is published in DNS, the form in the URLs among them
    assert new_host in dns_names("etcd-main-0", "etcd-main", "prod", domain)


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (
            {"etcd-0": ("http://10.0.0.5:2380",)},
            r"member etcd-0 .*'http://10.0.0.5:2380'.*not a name of the pod",
        ),
        ({"etcd-0": ("http://etcd-1.etcd:2380",)}, "not a name of the pod"),
        ({"etcd-0": ("http://etcd-0.other:2380",)}, "not a name of the pod"),
        ({"etcd-0": ("http://etcd-0.etcd.elsewhere:2380",)}, "not a name of the pod"),
        (
            {"etcd-0": ("http://etcd-0.etcd:2380",), "etcd-1": ("http://etcd-1.etcd.prod:2380",)},
            "2 different forms",
        ),
        (
            {"etcd-0": ("http://etcd-0.etcd:2380",), "etcd-1": ("http://etcd-1.etcd:2381",)},
            "2 different forms",
        ),
    ],
    ids=["ip", "other-pod", "other-service", "other-namespace", "mixed-depth", "mixed-port"],
)
def test_derive_name_form_refuses_what_cannot_be_migrated(
    urls: dict[str, tuple[str, ...]], message: str
) -> None:
    with pytest.raises(PreconditionFailed, match=message):
        derive_name_form(urls, "etcd", "prod")


FQDN = replace(L, source_service="etcd-headless", name_depth=5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://$HOSTNAME.etcd-headless:2380", "http://$HOSTNAME.etcd-main:2380"),
        ("http://${HOSTNAME}.etcd-headless.prod.svc:2380", "http://${HOSTNAME}.etcd-main.prod.svc:2380"),
        (
            "http://$(POD_NAME).etcd-headless.$(POD_NAMESPACE).svc.cluster.local:2380",
            "http://$(POD_NAME).etcd-main.$(POD_NAMESPACE).svc.cluster.local:2380",
        ),
        (
            "http://$(MY_POD).etcd-headless.prod.svc.cluster.local:2380",
            "http://$(MY_POD).etcd-main.prod.svc.cluster.local:2380",
        ),
        ("http://etcd-headless-lb:2379", "http://etcd-headless-lb:2379"),  # not a pod's own name
        ("http://$(POD_NAME).etcd-headless-x:2380", "http://$(POD_NAME).etcd-headless-x:2380"),
    ],
)
def test_rewrite_host_refs(text: str, expected: str) -> None:
    assert rewrite_host_refs(text, FQDN) == expected
    other_ns = replace(FQDN, target_namespace="new")
    if ".prod." in expected:
        assert rewrite_host_refs(text, other_ns) == expected.replace(".prod.", ".new.")
