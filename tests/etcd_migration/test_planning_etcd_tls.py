"""Table tests of the pure TLS decisions (planning/etcd_tls.py) and certificate issuing (real TLS)."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from planning.etcd_layout import Layout
from planning.etcd_tls import (
    SecretKeys,
    SecretMount,
    check_ca_source,
    check_peer_san_verification,
    etcd_command_text,
    member_cert_sans,
    new_secret_data,
    parse_tls_flags,
    peer_sans,
    redact_pems,
    rewrite_secret_volumes,
    secret_file_keys,
    secret_keys,
    shared_peer_sans,
    tls_secret_mounts,
    tls_server_name,
)
from stateferry.errors import InputError, PreconditionFailed
from tasks.etcd_certs import issue_member_cert, load_ca, make_ca

NOW = datetime.datetime(2026, 12, 4, tzinfo=datetime.UTC)
CMD = (
    "exec etcd --name=$(HOSTNAME) --client-cert-auth --peer-client-cert-auth "
    "--cert-file=/etc/etcd/tls/server.crt --key-file /etc/etcd/tls/server.key "
    "--trusted-ca-file=/etc/etcd/ca/ca.crt --peer-cert-file=/etc/etcd/tls/peer.crt "
    "--peer-key-file=/etc/etcd/tls/peer.key --peer-trusted-ca-file=/etc/etcd/ca/ca.crt"
)


@pytest.mark.parametrize(
    ("command", "files", "bools"),
    [
        (CMD, 6, {"client-cert-auth": True, "peer-client-cert-auth": True}),
        ("etcd --client-cert-auth=false --cert-file=/a/c --key-file=/a/k", 2, {"client-cert-auth": False}),
        ("etcd --listen-client-urls=http://0.0.0.0:2379", 0, {}),
        # a boolean flag last on a shell line: `&`, `;`, `|` are not its value
        (
            "etcd --peer-client-cert-auth --experimental-peer-skip-client-san-verification &",
            0,
            {"peer-client-cert-auth": True, "experimental-peer-skip-client-san-verification": True},
        ),
        ("etcd --client-cert-auth; wait", 0, {"client-cert-auth": True}),
    ],
)
def test_parse_tls_flags(command: str, files: int, bools: dict[str, bool]) -> None:
    flags = parse_tls_flags(command)
    assert len(flags.files) == files
    assert dict(flags.bools) == bools
    assert flags.peer_tls == (files == 6)


@pytest.mark.parametrize(
    "command",
    [
        "etcd --peer-auto-tls",
        "etcd --auto-tls=true",
        "etcd --peer-cert-file=/a/c",
        "etcd --peer-cert-file=/tls/$(POD_NAME).crt --peer-key-file=/tls/$(POD_NAME).key",  # per member
    ],
)
def test_parse_tls_flags_refuses(command: str) -> None:
    with pytest.raises(PreconditionFailed):
        parse_tls_flags(command)


@pytest.mark.parametrize(
    ("depth", "lb", "want_dns", "want_ip"),
    [
        (2, "127.0.0.5", "etcd-main-1.etcd-main", ["127.0.0.5"]),
        (5, None, "etcd-main-1.etcd-main.dst.svc.cluster.local", []),
        (1, "lb.example", "lb.example", []),
    ],
)
def test_peer_sans(depth: int, lb: str | None, want_dns: str, want_ip: list[str]) -> None:
    layout = Layout(
        "src", "dst", "etcd", "etcd", "etcd-main", "etcd-main", 3, 3, scheme="https", name_depth=depth
    )
    names, ips = peer_sans(layout, "etcd-main-1", lb)
    assert want_dns in names
    assert layout.host("etcd-main-1", new=True) in names
    assert "etcd-main-1" in names and "etcd-main-1.etcd-main.dst.svc" in names
    assert ips == want_ip
    assert names == sorted(set(names))


def _pod_spec(volumes: list[dict[str, object]]) -> dict[str, object]:
    return {
        "volumes": volumes,
        "containers": [
            {
                "name": "etcd",
                "volumeMounts": [
                    {"name": "tls", "mountPath": "/etc/etcd/tls"},
                    {"name": "ca", "mountPath": "/etc/etcd/ca/"},
                ],
            }
        ],
    }


def test_tls_secret_mounts_and_keys() -> None:
    spec = _pod_spec(
        [
            {"name": "tls", "secret": {"secretName": "etcd-tls"}},
            {"name": "ca", "secret": {"secretName": "etcd-ca"}},
        ]
    )
    flags = parse_tls_flags(CMD)
    mounts = tls_secret_mounts(spec, "etcd", flags)
    assert [(m.secret, m.mount_path) for m in mounts] == [
        ("etcd-tls", "/etc/etcd/tls"),
        ("etcd-ca", "/etc/etcd/ca"),
    ]
    assert secret_file_keys(flags, mounts[0]) == {
        "cert-file": "server.crt",
        "key-file": "server.key",
        "peer-cert-file": "peer.crt",
        "peer-key-file": "peer.key",
    }


def test_tls_secret_mounts_refuses_host_path() -> None:
    spec = _pod_spec(
        [{"name": "tls", "hostPath": {"path": "/etc/etcd"}}, {"name": "ca", "secret": {"secretName": "c"}}]
    )
    with pytest.raises(PreconditionFailed, match=r"--(cert|key|peer)"):
        tls_secret_mounts(spec, "etcd", parse_tls_flags(CMD))


@pytest.mark.parametrize(
    ("secret", "issuer", "served", "field"),
    [
        (None, "ca-issuer", False, "tls_issuer"),
        (None, None, False, "tls_ca_secret"),
        ("Bad_Name", None, False, "tls_ca_secret"),
    ],
)
def test_check_ca_source_refuses(secret: str | None, issuer: str | None, served: bool, field: str) -> None:
    with pytest.raises(InputError) as info:
        check_ca_source(secret, issuer, served)
    assert info.value.field == field


def test_check_ca_source_accepts() -> None:
    assert check_ca_source("etcd-ca", None, False) == "etcd-ca"


def test_load_ca_refuses_without_leaking() -> None:
    ca_crt, ca_key = make_ca("ca", now=NOW)
    _, other_key = make_ca("other", now=NOW)
    with pytest.raises(InputError) as info:
        load_ca(ca_crt, other_key)
    assert "PRIVATE" not in str(info.value)
    with pytest.raises(InputError):
        load_ca(b"junk", ca_key)
    assert redact_pems("x " + other_key.decode().strip() + " y", []) == "x *** y"


def test_issued_cert_serves_real_tls_for_every_san() -> None:
    ca_crt, ca_key = make_ca("etcd-ca", now=datetime.datetime.now(datetime.UTC))
    layout = Layout("src", "dst", "etcd", "etcd", "etcd-main", "etcd-main", 3, 3, scheme="https")
    names, ips = peer_sans(layout, "etcd-main-0", "127.0.0.1")
    issued = issue_member_cert(
        ca_crt, ca_key, "etcd-main-0", names, ips, now=datetime.datetime.now(datetime.UTC)
    )
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == names
    assert "PRIVATE" not in repr(issued)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "c").write_bytes(issued.cert_pem)
        (d / "k").write_bytes(issued.key_pem)
        (d / "ca").write_bytes(ca_crt)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(d / "c", d / "k")
        server.load_verify_locations(d / "ca")
        server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as --peer-client-cert-auth
        client = ssl.create_default_context(cafile=str(d / "ca"))
        client.load_cert_chain(d / "c", d / "k")
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]

            def serve() -> None:
                for _ in range(2):
                    conn, _addr = listener.accept()
                    try:
                        with server.wrap_socket(conn, server_side=True) as tls:
                            tls.sendall(b"ok")
                    except ssl.SSLError:
                        pass

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            for host in ("etcd-main-0.etcd-main", "127.0.0.1"):
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                    client.wrap_socket(raw, server_hostname=host) as tls,
                ):
                    assert tls.recv(2) == b"ok"
            thread.join(10)
        with socket.create_server(("127.0.0.1", 0)) as listener2:
            port2 = listener2.getsockname()[1]

            def refuse() -> None:
                conn, _addr = listener2.accept()
                with contextlib.suppress(ssl.SSLError, OSError):
                    server.wrap_socket(conn, server_side=True).close()

            refusing = threading.Thread(target=refuse, daemon=True)
            refusing.start()
            with (
                socket.create_connection(("127.0.0.1", port2), timeout=10) as raw,
                pytest.raises(ssl.SSLCertVerificationError),
            ):
                client.wrap_socket(raw, server_hostname="etcd-0.etcd")
            refusing.join(10)


def test_shared_peer_sans_cover_every_new_member_and_lb() -> None:
    layout = Layout("src", "dst", "etcd", "etcd", "etcd-main", "etcd-main", 3, 3, scheme="https")
    names, ips = shared_peer_sans(layout, {"etcd-main-0": "127.0.0.7", "etcd-main-2": "127.0.0.9"})
    assert ips == ["127.0.0.7", "127.0.0.9"]
    for pod in layout.new_pods():
        assert layout.host(pod, new=True) in names
        assert f"{pod}.etcd-main.dst.svc.cluster.local" in names
    assert not any(n.startswith("etcd-0") for n in names)  # never the source members' names


def test_rewrite_secret_volumes_keeps_paths_and_other_volumes() -> None:
    spec = _pod_spec(
        [
            {"name": "tls", "secret": {"secretName": "etcd-tls", "defaultMode": 0o400}},
            {"name": "ca", "secret": {"secretName": "etcd-ca"}},
            {"name": "data", "emptyDir": {}},
        ]
    )
    out = rewrite_secret_volumes(spec, {"etcd-tls": "etcd-main-etcd-tls"})
    assert out["volumes"][0] == {
        "name": "tls",
        "secret": {"secretName": "etcd-main-etcd-tls", "defaultMode": 0o400},
    }
    assert out["volumes"][1:] == spec["volumes"][1:]
    assert out["containers"] == spec["containers"]
    assert spec["volumes"][0]["secret"]["secretName"] == "etcd-tls"  # input untouched


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        (CMD, True),  # peer mTLS: the old members would check the new ones' address against their SANs
        (CMD + " --experimental-peer-skip-client-san-verification", False),
        (CMD + " --experimental-peer-skip-client-san-verification=false", True),
        (CMD.replace("--peer-client-cert-auth", ""), False),  # no peer client certificates checked
        ("etcd --cert-file=/a/c --key-file=/a/k", False),  # client TLS only
    ],
)
def test_check_peer_san_verification(command: str, refused: bool) -> None:
    flags = parse_tls_flags(command)
    if refused:
        with pytest.raises(PreconditionFailed, match="experimental-peer-skip-client-san-verification"):
            check_peer_san_verification(flags)
    else:
        check_peer_san_verification(flags)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"command": ["etcd"], "args": ["--cert-file=/a"]}, "etcd --cert-file=/a"),
        (
            {
                "command": ["etcd"],
                "env": [{"name": "ETCD_PEER_CERT_FILE", "value": "/t/p.crt"}, {"name": "X", "value": "1"}],
            },
            "etcd --peer-cert-file=/t/p.crt",
        ),
        ({"env": [{"name": "ETCD_CERT_FILE", "valueFrom": {"secretKeyRef": {}}}]}, ""),
    ],
)
def test_etcd_command_text(container: dict[str, Any], expected: str) -> None:
    assert etcd_command_text(container) == expected


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        (["*.etcd", "etcd-client.ns.svc"], "etcd-client.ns.svc"),
        (["*.etcd.ns.svc.cluster.local", "*.etcd"], "etcd-0.etcd.ns.svc.cluster.local"),
    ],
)
def test_tls_server_name(sans: list[str], expected: str) -> None:
    assert tls_server_name(sans, "etcd-0") == expected


def test_tls_server_name_refuses_a_certificate_without_names() -> None:
    with pytest.raises(PreconditionFailed, match="subjectAltName"):
        tls_server_name([], "etcd-0")


def test_member_cert_sans_keep_the_source_names_and_drop_its_ips() -> None:
    layout = Layout("src", "dst", "etcd", "etcd", "etcd-main", "etcd-main", 3, 3, scheme="https")
    names, ips = member_cert_sans(layout, {"etcd-main-0": "127.0.0.7"}, ["etcd-client.src.svc", "*.etcd"])
    assert {"etcd-client.src.svc", "*.etcd", "etcd-main-0.etcd-main", "etcd-main-2.etcd-main"} <= set(names)
    assert ips == ["127.0.0.7"]


@pytest.mark.parametrize(
    ("bundle", "expected"),
    [
        (b"OLD-CA\n", b"OLD-CA\nNEW-CA\n"),  # the old CA stays trusted, the issuing one is added
        (b"NEW-CA\n", b"NEW-CA\n"),  # already there: unchanged
        (b"", b"NEW-CA\n"),
    ],
)
def test_new_secret_data(bundle: bytes, expected: bytes) -> None:
    keys = SecretKeys(certs=("tls.crt",), keys=("tls.key",), cas=("ca.crt",))
    source = {"tls.crt": b"OLD-CERT", "tls.key": b"OLD-KEY", "ca.crt": bundle, "other": b"kept"}
    out = new_secret_data(source, keys, cert_pem=b"NEW-CERT", key_pem=b"NEW-KEY", ca_pem=b"NEW-CA\n")
    assert out == {"tls.crt": b"NEW-CERT", "tls.key": b"NEW-KEY", "ca.crt": expected, "other": b"kept"}
    assert source["tls.crt"] == b"OLD-CERT"  # the source data is not changed


def test_secret_keys_sorts_the_files_of_one_mount() -> None:
    flags = parse_tls_flags(CMD)
    tls = SecretMount("tls", "etcd-tls", "/etc/etcd/tls")
    ca = SecretMount("ca", "etcd-ca", "/etc/etcd/ca")
    assert secret_keys(flags, tls) == SecretKeys(("peer.crt", "server.crt"), ("peer.key", "server.key"), ())
    assert secret_keys(flags, ca) == SecretKeys((), (), ("ca.crt",))
