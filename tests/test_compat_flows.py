"""Saved prefect-aws blocks in real flow runs: bucket_mirror and a backup job against the SeaweedFS
servers of the harness; no secret in what a run shows (conversions: ``tests/test_compat_blocks.py``)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect_aws.client_parameters import AwsClientParameters
from prefect_aws.credentials import AwsCredentials, MinIOCredentials
from prefect_aws.s3 import S3Bucket
from prefect_run import flow_run_texts
from pydantic import SecretStr

from blocks.compat import to_object_store
from blocks.object_store import ObjectStore

pytestmark = pytest.mark.timeout(300)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _minio_for(s3: Any) -> MinIOCredentials:
    return MinIOCredentials(
        minio_root_user=s3.access_key,
        minio_root_password=s3.secret_key,
        region_name=s3.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=f"http://{s3.endpoint}"),
    )


def _aws_for(s3: Any, **kw: Any) -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=kw.pop("secret", s3.secret_key),
        region_name=s3.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=f"http://{s3.endpoint}"),
        **kw,
    )


def _everything_shown(state: Any) -> str:
    """Logs, artifacts, the final message, the result and the recorded parameters of a flow run."""
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(run_id).parameters
    result = state.result(raise_on_failure=False)
    return flow_run_texts(run_id) + json.dumps(parameters, default=str) + repr(result)


def test_saved_s3_bucket_and_aws_credentials_drive_bucket_mirror(
    prefect_server: Any, s3_a: Any, s3_b: Any, object_store_b: ObjectStore
) -> None:
    from flows.bucket_mirror import bucket_mirror

    source_bucket = f"compat-{_uid()}"
    src = ObjectStore(
        endpoint=s3_a.endpoint, access_key=s3_a.access_key, secret_key=SecretStr(s3_a.secret_key)
    ).minio_client()
    src.make_bucket(source_bucket)
    files = {"a.txt": b"alpha", "dir/b.bin": bytes(range(256)) * 40}
    for key, data in files.items():
        src.put_object(source_bucket, key, io.BytesIO(data), len(data))
    minio_name, bucket_name, aws_name = (
        f"compat-minio-{_uid()}",
        f"compat-bucket-{_uid()}",
        f"compat-aws-{_uid()}",
    )
    minio = _minio_for(s3_a)
    minio.save(minio_name)
    S3Bucket(bucket_name=source_bucket, credentials=minio).save(bucket_name)
    _aws_for(s3_b).save(aws_name)

    # the source bucket comes from the S3Bucket block; the destination bucket defaults to it
    state = bucket_mirror(
        source=f"s3-bucket/{bucket_name}", destination=f"aws-credentials/{aws_name}", return_state=True
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["verified"], summary
    dst = object_store_b.minio_client()
    assert {
        o.object_name: dst.get_object(source_bucket, o.object_name).read()
        for o in dst.list_objects(source_bucket, recursive=True)
    } == files
    shown = _everything_shown(state)
    for secret in (s3_a.secret_key, s3_b.secret_key):
        assert secret not in shown

    # an unsaved MinIOCredentials instance works the same (Prefect masks its SecretStr in the parameters)
    state = bucket_mirror(
        source=f"minio-credentials/{minio_name}",
        destination=_aws_for(s3_b),
        bucket=source_bucket,
        destination_bucket=f"{source_bucket}-copy",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert sorted(o.object_name for o in dst.list_objects(f"{source_bucket}-copy", recursive=True)) == sorted(
        files
    )
    shown = _everything_shown(state)
    for secret in (s3_a.secret_key, s3_b.secret_key):
        assert secret not in shown


def test_rejected_and_refused_credentials_never_show_the_secret(
    prefect_server: Any, s3_a: Any, s3_b: Any
) -> None:
    from flows.bucket_mirror import bucket_mirror

    wrong, token = f"wrong-{_uid()}-secret-key", f"session-{_uid()}-token"
    bad_name, token_name, good_name = f"compat-bad-{_uid()}", f"compat-tok-{_uid()}", f"compat-ok-{_uid()}"
    _aws_for(s3_a, secret=wrong).save(bad_name)
    _aws_for(s3_a, aws_session_token=token).save(token_name)
    _aws_for(s3_b).save(good_name)

    state = bucket_mirror(
        source=f"aws-credentials/{bad_name}", destination=f"aws-credentials/{good_name}", return_state=True
    )
    assert state.is_failed()
    assert "rejected the credentials" in str(state.message), state.message
    shown = _everything_shown(state)
    assert wrong not in shown and s3_b.secret_key not in shown

    state = bucket_mirror(
        source=f"aws-credentials/{token_name}", destination=f"aws-credentials/{good_name}", return_state=True
    )
    assert state.is_failed()
    shown = _everything_shown(state)
    assert "source.aws_session_token" in str(state.message), state.message
    assert token not in shown and s3_a.secret_key not in shown


def test_backup_job_stores_through_a_saved_s3_bucket(prefect_server: Any, s3_a: Any, tmp_path: Path) -> None:
    from backup.helpers import s3_keys

    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f.txt").write_text("compat backup\n")
    bucket, name = f"compat-bk-{_uid()}", f"compat-job-bucket-{_uid()}"
    S3Bucket(bucket_name=bucket, credentials=_minio_for(s3_a)).save(name)
    job = {
        "job": f"compat-{_uid()}",
        "type": "desc_files",
        "sources": [{"target": [str(source)]}],
        "storages": [{"storage": "s3", "object_store": f"s3-bucket/{name}", "backup_dir": "/nightly"}],
    }
    state = scheduled_backup(job, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["failed"] == {} and result["good"] == [f"s3:s3-bucket/{name}/nightly"]
    store = to_object_store(_minio_for(s3_a), "s")
    assert any(k.endswith("manifest.json") for k in s3_keys(store.store, bucket, f"nightly/{job['job']}/"))
    assert s3_a.secret_key not in _everything_shown(state)
    restore_backup(job, target_dir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "d" / "f.txt").read_text() == "compat backup\n"

    missing = {**job, "storages": [{"storage": "s3", "object_store": f"minio-credentials/{name}"}]}
    with pytest.raises(Exception, match="bucket_name"):
        scheduled_backup(missing)
