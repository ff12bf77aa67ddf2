"""The error taxonomy (client-library errors classified in one place) and the retry policy built on it."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import grpc
import grpc.aio
import httpx
import kubernetes.client
import kubernetes.config
import pydantic
import pytest
import requests
import urllib3
import urllib3.exceptions
from etcd3aio import errors as etcd_errors
from kubernetes.client.exceptions import ApiException
from minio.error import S3Error, ServerError
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.states import Completed, Failed

from devservers.ports import free_port
from stateferry.errors import (
    Conflict,
    FieldCause,
    InputError,
    Invalid,
    NotFound,
    PermanentError,
    PreconditionFailed,
    StateferryError,
    TransientError,
    is_transient,
    translate,
)
from tasks.retry import TRANSIENT_RETRY, retry_transient


def k8s_error(status: int, message: str) -> ApiException:
    body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": status}
    )
    return ApiException(status=status, reason="reason", body=body)


def s3_error(code: str, status: int) -> S3Error:
    return S3Error(urllib3.HTTPResponse(status=status), code, f"{code} message", "/bucket", "req-1", "host-1")


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} message"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "HeadBucket")


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def etcd3aio_error(cls: type[Exception], code: grpc.StatusCode, details: str) -> Exception:
    try:
        try:
            raise rpc_error(code, details)
        except grpc.aio.AioRpcError as inner:
            raise cls(f"op failed: {details}") from inner
    except Exception as outer:
        return outer


def pydantic_error() -> pydantic.ValidationError:
    class Model(pydantic.BaseModel):
        port: int

    try:
        Model(port="not a port")  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def httpx_status(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    return httpx.HTTPStatusError("bad", request=request, response=httpx.Response(status, request=request))


def requests_status(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.reason = "reason"
    return requests.HTTPError("bad", response=response)


def max_retry(reason: Exception) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "http://127.0.0.1:1/x", reason)  # type: ignore[arg-type]


CASES: list[tuple[str, Callable[[], BaseException], type[StateferryError], tuple[str, ...]]] = [
    # Kubernetes ApiException by status, with the server's Status message
    ("k8s 429", lambda: k8s_error(429, "storage is (re)initializing"), TransientError, ("429",)),
    ("k8s 500", lambda: k8s_error(500, "etcd timeout"), TransientError, ("etcd timeout",)),
    ("k8s 503", lambda: k8s_error(503, "unavailable"), TransientError, ("503",)),
    (
        "k8s 404",
        lambda: k8s_error(404, 'configmaps "x" not found'),
        NotFound,
        ('configmaps "x" not found',),
    ),
    (
        "k8s 409",
        lambda: k8s_error(409, "the object has been modified"),
        Conflict,
        ("has been modified",),
    ),
    ("k8s 422", lambda: k8s_error(422, "metadata.name: Invalid value"), Invalid, ("metadata.name",)),
    ("k8s 400", lambda: k8s_error(400, "cannot unmarshal number"), PermanentError, ("unmarshal",)),
    ("k8s 401", lambda: k8s_error(401, "Unauthorized"), PermanentError, ("credentials",)),
    ("k8s 403", lambda: k8s_error(403, 'cannot list resource "pods"'), PermanentError, ("permission",)),
    (
        "k8s config",
        lambda: kubernetes.config.ConfigException("Invalid kube-config file"),
        InputError,
        ("kubeconfig",),
    ),
    # urllib3 / requests / httpx
    (
        "urllib3 new connection",
        lambda: urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
        TransientError,
        ("refused",),
    ),
    (
        "urllib3 read timeout",
        lambda: urllib3.exceptions.ReadTimeoutError(None, "/x", "t"),  # type: ignore[arg-type]
        TransientError,
        (),
    ),
    ("urllib3 protocol", lambda: urllib3.exceptions.ProtocolError("reset"), TransientError, ()),
    (
        "urllib3 max retry(conn refused)",
        lambda: max_retry(urllib3.exceptions.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
        TransientError,
        ("127.0.0.1:1",),
    ),
    (
        "urllib3 ssl",
        lambda: max_retry(urllib3.exceptions.SSLError("bad cert")),
        PermanentError,
        ("CA bundle",),
    ),
    ("httpx connect", lambda: httpx.ConnectError("refused"), TransientError, ("ConnectError",)),
    ("httpx read timeout", lambda: httpx.ReadTimeout("slow"), TransientError, ()),
    ("httpx 502", lambda: httpx_status(502), TransientError, ("502",)),
    ("httpx 404", lambda: httpx_status(404), PermanentError, ("404",)),
    ("httpx bad url", lambda: httpx.UnsupportedProtocol("ftp"), InputError, ("endpoint",)),
    ("requests connection", lambda: requests.ConnectionError("refused"), TransientError, ()),
    ("requests timeout", lambda: requests.Timeout("slow"), TransientError, ()),
    ("requests 429", lambda: requests_status(429), TransientError, ("429",)),
    ("requests 403", lambda: requests_status(403), PermanentError, ("403",)),
    # minio S3Error / botocore ClientError by code
    ("minio SlowDown", lambda: s3_error("SlowDown", 503), TransientError, ("SlowDown",)),
    ("minio ServiceUnavailable", lambda: s3_error("ServiceUnavailable", 503), TransientError, ()),
    ("minio InternalError", lambda: s3_error("InternalError", 500), TransientError, ()),
    ("minio RequestTimeout", lambda: s3_error("RequestTimeout", 400), TransientError, ()),
    ("minio NoSuchBucket", lambda: s3_error("NoSuchBucket", 404), PermanentError, ("create it",)),
    ("minio AccessDenied", lambda: s3_error("AccessDenied", 403), PermanentError, ("permission",)),
    (
        "minio InvalidAccessKeyId",
        lambda: s3_error("InvalidAccessKeyId", 403),
        PermanentError,
        ("access_key",),
    ),
    ("minio Signature", lambda: s3_error("SignatureDoesNotMatch", 403), PermanentError, ("secret_key",)),
    ("minio unknown 503", lambda: s3_error("Weird", 503), TransientError, ()),
    ("minio server error", lambda: ServerError("bad gateway", 502), TransientError, ("502",)),
    ("boto SlowDown", lambda: client_error("SlowDown", 503), TransientError, ("SlowDown",)),
    ("boto RequestTimeout", lambda: client_error("RequestTimeout", 400), TransientError, ()),
    ("boto NoSuchBucket", lambda: client_error("NoSuchBucket", 404), PermanentError, ("bucket name",)),
    ("boto AccessDenied", lambda: client_error("AccessDenied", 403), PermanentError, ()),
    (
        "boto InvalidAccessKeyId",
        lambda: client_error("InvalidAccessKeyId", 403),
        PermanentError,
        ("access_key",),
    ),
    ("boto Signature", lambda: client_error("SignatureDoesNotMatch", 403), PermanentError, ("secret_key",)),
    (
        "boto endpoint",
        lambda: botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        TransientError,
        ("S3 endpoint",),
    ),
    # gRPC codes and etcd messages
    (
        "grpc unavailable",
        lambda: rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"),
        TransientError,
        (),
    ),
    (
        "grpc deadline",
        lambda: rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        TransientError,
        (),
    ),
    ("grpc exhausted", lambda: rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota"), TransientError, ()),
    (
        "etcd too many requests",
        lambda: rpc_error(grpc.StatusCode.UNKNOWN, "etcdserver: too many requests"),
        TransientError,
        ("too many requests",),
    ),
    (
        "etcd leader changed",
        lambda: rpc_error(grpc.StatusCode.UNKNOWN, "etcdserver: leader changed"),
        TransientError,
        (),
    ),
    (
        "etcd unhealthy",
        lambda: rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: unhealthy cluster"),
        TransientError,
        ("unhealthy cluster",),
    ),
    (
        "etcd no leader",
        lambda: rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
        TransientError,
        (),
    ),
    (
        "etcd peer urls exist",
        lambda: rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"),
        PermanentError,
        ("already registered",),
    ),
    (
        "etcd member not found",
        lambda: rpc_error(grpc.StatusCode.NOT_FOUND, "etcdserver: member not found"),
        PermanentError,
        ("member list",),
    ),
    (
        "etcd permission denied",
        lambda: rpc_error(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
        PermanentError,
        ("role",),
    ),
    (
        "etcd auth failed",
        lambda: rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"
        ),
        PermanentError,
        ("EtcdCluster.username",),
    ),
    (
        "grpc invalid argument",
        lambda: rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad key"),
        PermanentError,
        (),
    ),
    (
        "grpc failed precondition",
        lambda: rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "x"),
        PreconditionFailed,
        (),
    ),
    # etcd3aio's own exceptions (with and without the gRPC cause)
    (
        "etcd3aio connection",
        lambda: etcd3aio_error(
            etcd_errors.EtcdConnectionError, grpc.StatusCode.UNAVAILABLE, "failed to connect"
        ),
        TransientError,
        ("failed to connect",),
    ),
    (
        "etcd3aio transient bare",
        lambda: etcd_errors.EtcdTransientError("deadline"),
        TransientError,
        ("deadline",),
    ),
    (
        "etcd3aio unauthenticated",
        lambda: etcd3aio_error(
            etcd_errors.EtcdUnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED, "invalid auth token"
        ),
        PermanentError,
        ("EtcdCluster.username",),
    ),
    (
        "etcd3aio permission",
        lambda: etcd_errors.EtcdPermissionDeniedError("KV.Put failed: etcdserver: permission denied"),
        PermanentError,
        ("role",),
    ),
    # OS level
    ("refused", lambda: ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), TransientError, ()),
    ("reset", lambda: ConnectionResetError(errno.ECONNRESET, "reset by peer"), TransientError, ()),
    ("timeout", lambda: TimeoutError(), TransientError, ("timed out",)),
    ("oserror unreachable", lambda: OSError(errno.EHOSTUNREACH, "No route to host"), TransientError, ()),
    (
        "no such host",
        lambda: socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        PermanentError,
        ("host",),
    ),
    ("dns again", lambda: socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), TransientError, ()),
    ("file not found", lambda: FileNotFoundError(errno.ENOENT, "No such file"), PermanentError, ()),
    # input and unknown errors
    ("pydantic", pydantic_error, InputError, ("port",)),
    ("unknown", lambda: RuntimeError("boom"), PermanentError, ("RuntimeError", "boom")),
]


@pytest.mark.parametrize(("make", "expected", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translate_classifies(
    make: Callable[[], BaseException], expected: type[StateferryError], fragments: tuple[str, ...]
) -> None:
    exc = make()
    result = translate(exc, context="doing the thing")
    assert isinstance(result, expected), f"{type(result).__name__}: {result}"
    text = str(result)
    assert text.startswith("doing the thing: ") or isinstance(result, InputError)
    for fragment in fragments:
        assert fragment in text, text
    assert result.__cause__ is exc
    assert is_transient(exc) is isinstance(result, TransientError)


def test_stateferry_errors_pass_through_unchanged() -> None:
    err = PreconditionFailed("quorum would be lost: expected 3 healthy members, found 2")
    assert translate(err) is err
    assert not is_transient(err)
    assert is_transient(TransientError("x"))


def test_kubernetes_status_causes_travel_with_the_typed_error() -> None:
    """A 422 (an immutable field) and an apply conflict carry the Status ``details.causes``."""
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "code": 422,
        "message": 'PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable',
        "details": {
            "name": "data",
            "kind": "PersistentVolumeClaim",
            "causes": [
                {"reason": "FieldValueForbidden", "message": "Forbidden: spec is immutable", "field": "spec"}
            ],
        },
    }
    err = translate(ApiException(status=422, reason="Unprocessable Entity", body=json.dumps(body)))
    assert isinstance(err, Invalid) and not is_transient(err)
    assert err.causes == (FieldCause("spec", "FieldValueForbidden", "Forbidden: spec is immutable"),)
    conflict = translate(k8s_error(409, "Apply failed with 1 conflict"))
    assert isinstance(conflict, Conflict) and conflict.causes == ()


def test_input_error_names_field_problem_and_fix() -> None:
    err = InputError("endpoint", "'::bad' is not host:port", "use 127.0.0.1:8333 or http://host:port")
    assert str(err) == "endpoint: '::bad' is not host:port. Fix: use 127.0.0.1:8333 or http://host:port"
    assert isinstance(err, PermanentError)
    assert isinstance(err, ValueError)
    assert (err.field, err.problem, err.fix) == (
        "endpoint",
        "'::bad' is not host:port",
        "use 127.0.0.1:8333 or http://host:port",
    )


def test_unknown_wrapper_is_classified_by_its_cause() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        except OSError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_real_connection_refused_from_http_clients() -> None:
    """Real clients against a closed loopback port raise errors that classify as transient."""
    port = free_port()
    with pytest.raises(httpx.ConnectError) as httpx_info:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert is_transient(httpx_info.value)

    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    with (
        kubernetes.client.ApiClient(configuration) as api,
        pytest.raises(urllib3.exceptions.MaxRetryError) as k8s_info,
    ):
        kubernetes.client.CoreV1Api(api).list_namespace(_request_timeout=2)
    translated = translate(k8s_info.value, context="listing namespaces")
    assert isinstance(translated, TransientError)
    assert f"127.0.0.1:{port}" in str(translated) or "refused" in str(translated).lower()


def test_importing_errors_does_not_import_client_libraries() -> None:
    code = (
        "import sys, stateferry.errors\n"
        "libs = ('kubernetes', 'minio', 'botocore', 'grpc', 'etcd3aio', 'httpx')\n"
        "heavy = [m for m in libs if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------ retry policy (tasks/retry.py)

ATTEMPTS: dict[str, int] = {}


@task(**TRANSIENT_RETRY)
def flaky_then_ok(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= 2:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    return "ok"


@task(**TRANSIENT_RETRY)
def always_bad_request(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    raise PermanentError("the Kubernetes API answered HTTP 422: spec.replicas: Invalid value")


@flow
def retry_demo(key: str, bad: bool) -> Any:
    if bad:
        return always_bad_request(key, return_state=True)
    return flaky_then_ok(key, return_state=True)


def _run_count(state: Any) -> int:
    with get_client(sync_client=True) as client:
        return int(client.read_task_run(state.state_details.task_run_id).run_count)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TransientError("etcd answered: leader changed"), True),
        (TimeoutError(), True),
        (PermanentError("HTTP 404"), False),
        (PreconditionFailed("quorum would be lost"), False),
        (ValueError("bad"), False),
    ],
)
def test_retry_condition_reads_the_failed_state(exc: BaseException, expected: bool) -> None:
    assert retry_transient(None, None, Failed(data=exc)) is expected


def test_retry_condition_ignores_states_without_exception() -> None:
    assert retry_transient(None, None, Completed(data=1)) is False


def test_transient_failure_is_retried_until_success(prefect_server: Any) -> None:
    started = time.monotonic()
    state: Any = retry_demo("transient", bad=False)
    assert state.is_completed(), state
    assert state.result() == "ok"
    assert ATTEMPTS["transient"] == 3
    assert _run_count(state) == 3
    assert time.monotonic() - started < 30


def test_permanent_failure_fails_at_once(prefect_server: Any) -> None:
    state: Any = retry_demo("permanent", bad=True, return_state=True)
    task_state = state.result(raise_on_failure=False)
    assert task_state.is_failed()
    assert ATTEMPTS["permanent"] == 1
    assert _run_count(task_state) == 1
    assert "HTTP 422" in (task_state.message or "") or "HTTP 422" in str(
        task_state.result(raise_on_failure=False)
    )


def test_database_driver_errors() -> None:
    import psycopg
    import pymysql

    refused = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' (111)")
    denied = pymysql.err.OperationalError(
        1045, "Access denied for user 'root'@'localhost' (using password: YES)"
    )
    assert is_transient(refused)
    assert "Database.password" in str(translate(denied)) and not is_transient(denied)
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(host="127.0.0.1", port=free_port(), user="x", password="y", connect_timeout=2)
    assert is_transient(info.value)
