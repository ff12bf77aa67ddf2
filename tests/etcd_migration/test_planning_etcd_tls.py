"""Table tests of the pure TLS decisions (planning/etcd_tls.py) and certificate issuing (real TLS)."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import pytest
from cryptography import x509

from planning.etcd_stretch import Layout
from planning.etcd_tls import (
    check_ca_source,
    parse_tls_flags,
    peer_sans,
    redact_pems,
    rewrite_secret_volumes,
    secret_file_keys,
    shared_peer_sans,
    tls_secret_mounts,
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
    ],
)
def test_parse_tls_flags(command: str, files: int, bools: dict[str, bool]) -> None:
    flags = parse_tls_flags(command)
    assert len(flags.files) == files
    assert dict(flags.bools) == bools
    assert flags.peer_tls == (files == 6)


@pytest.mark.parametrize(
    "command", ["etcd --peer-auto-tls", "etcd --auto-tls=true", "etcd --peer-cert-file=/a/c"]
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
