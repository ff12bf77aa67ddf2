"""Each flow's options as one pydantic model: the models, the merge of the deprecated flat parameters,
and the parameter schema Prefect builds its UI form and its run-creation check from (pure: no server)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate
from pydantic import ValidationError

from planning.backup_config import job_to_parameters, parse_job
from planning.backup_options import BackupJobSpec, RestoreBackupOptions
from planning.etcd_options import EtcdMigrationOptions
from planning.flow_options import FlowOptions, merge_options
from planning.mirror_options import BucketMirrorOptions
from planning.resource_options import AppMigrationOptions, ResourceBackupOptions, ResourceRestoreOptions
from stateferry.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

FLOWS: dict[str, tuple[str, type[FlowOptions]]] = {
    "flows/bucket_mirror.py:bucket_mirror": ("options", BucketMirrorOptions),
    "flows/etcd_migration.py:etcd_stretch_migration": ("options", EtcdMigrationOptions),
    "flows/resource_backup.py:resource_backup": ("options", ResourceBackupOptions),
    "flows/resource_backup.py:resource_restore": ("options", ResourceRestoreOptions),
    "flows/app_migration.py:app_migration": ("options", AppMigrationOptions),
    "flows/restore.py:restore_backup": ("options", RestoreBackupOptions),
    "flows/backup.py:scheduled_backup": ("job", BackupJobSpec),
}


def _load(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def _merge(model: type[FlowOptions], options: Any, **flat: Any) -> tuple[Any, list[str]]:
    said: list[str] = []
    return merge_options(model, options, flat, docs="docs", warn=said.append), said


@pytest.mark.parametrize("entrypoint", sorted(FLOWS))
def test_the_parameter_schema_holds_the_options_model_with_described_fields(entrypoint: str) -> None:
    param, model = FLOWS[entrypoint]
    schema = parameter_schema(_load(entrypoint)).model_dump()
    refs = [s.get("$ref") for s in schema["properties"][param].get("anyOf", [schema["properties"][param]])]
    assert f"#/definitions/{model.__name__}" in refs
    fields = schema["definitions"][model.__name__]["properties"]
    assert set(fields) == set(model.model_fields)
    assert all(f.get("description") for f in fields.values()), "every option is described in the form"
    assert schema["definitions"][model.__name__]["additionalProperties"] is False


def test_enums_and_ranges_are_in_the_schema_and_refused_before_a_run() -> None:
    schema = parameter_schema(_load("flows/bucket_mirror.py:bucket_mirror")).model_dump()
    fields = schema["definitions"]["BucketMirrorOptions"]["properties"]
    assert fields["verify"]["enum"] == ["etag", "checksum"]
    assert fields["direction"]["enum"] == ["one-way", "two-way"]
    assert (fields["workers"]["minimum"], fields["workers"]["maximum"]) == (1, 256)
    assert (fields["max_delete_ratio"]["minimum"], fields["max_delete_ratio"]["maximum"]) == (0, 1)
    good = {"options": {"bucket": "b", "verify": "checksum", "workers": 8}}
    assert validate(good, schema, preprocess=True, ignore_required=True, raise_on_error=False) == []
    for bad in ({"verify": "sha1"}, {"workers": 0}, {"direction": "sideways"}, {"max_delete_ratio": 2}):
        errors = validate(
            {"options": bad}, schema, preprocess=True, ignore_required=True, raise_on_error=False
        )
        assert errors, f"{bad} must be refused by the schema"
    etcd = parameter_schema(_load("flows/etcd_migration.py:etcd_stretch_migration")).model_dump()
    assert etcd["definitions"]["EtcdMigrationOptions"]["properties"]["dns_provider"]["enum"] == [
        "coredns",
        "deckhouse",
    ]


def test_flat_parameters_map_onto_the_model_with_one_deprecation_line() -> None:
    opts, said = _merge(BucketMirrorOptions, None, bucket="b", workers=4, verify=None, source="not a field")
    assert (opts.bucket, opts.workers, opts.verify) == ("b", 4, "etag")
    assert len(said) == 1 and "deprecated" in said[0] and "bucket, workers" in said[0]
    # flat names fill what options leaves at its default; the same value given twice is fine
    opts, said = _merge(
        BucketMirrorOptions, BucketMirrorOptions(bucket="b", remove=True), workers=4, bucket="b"
    )
    assert (opts.bucket, opts.remove, opts.workers) == ("b", True, 4) and said
    # the UI form sends every default: a default in options never hides a flat value
    opts, _ = _merge(BucketMirrorOptions, {"bucket": "b", "workers": 16, "remove": False}, remove=True)
    assert opts.remove is True
    opts, said = _merge(BucketMirrorOptions, {"bucket": "b"})
    assert isinstance(opts, BucketMirrorOptions) and opts.bucket == "b" and said == []
    assert _merge(BucketMirrorOptions, None)[0] == BucketMirrorOptions()


def test_a_field_given_both_ways_with_different_values_is_refused() -> None:
    with pytest.raises(InputError) as err:
        _merge(BucketMirrorOptions, BucketMirrorOptions(bucket="b", workers=8), workers=4)
    assert err.value.field == "workers"
    assert "options.workers=8" in err.value.problem and "workers=4" in err.value.problem
    assert "options.workers" in err.value.fix


def test_errors_name_the_parameter_as_it_was_given_and_the_fix() -> None:
    with pytest.raises(InputError) as err:
        _merge(BucketMirrorOptions, None, bucket="b", verify="sha1")
    assert err.value.field == "verify" and err.value.fix == "use 'etag' or 'checksum'"
    with pytest.raises(InputError) as err:
        _merge(BucketMirrorOptions, {"bucket": "b", "verify": "sha1"})
    assert err.value.field == "options.verify"
    with pytest.raises(InputError) as err:
        _merge(BucketMirrorOptions, {"bucket": "b"}, prefix="lo*gs")
    assert err.value.field == "prefix" and "trailing '*'" in err.value.problem
    with pytest.raises(InputError) as err:
        _merge(BucketMirrorOptions, {"bucket": "b", "workers": 0})
    assert err.value.field == "options.workers" and "greater than or equal to 1" in err.value.fix
    with pytest.raises(InputError) as err:  # a whole-model check names its own field
        _merge(BucketMirrorOptions, {"bucket": "b", "dry_run": True}, watch=True)
    assert err.value.field == "watch" and "dry_run" in err.value.problem
    with pytest.raises(InputError) as err:
        _merge(ResourceRestoreOptions, None, bucket="b")
    assert err.value.field == "options.backup_name" and "add 'backup_name'" in err.value.fix


@pytest.mark.parametrize(
    ("model", "data", "field", "problem"),
    [
        (BucketMirrorOptions, {"bucket": "b", "newer_than": "7 days"}, "newer_than", "not a duration"),
        (BucketMirrorOptions, {"bucket": "b", "watch": True, "shards": 4}, "shards", "one-shot"),
        (BucketMirrorOptions, {"direction": "two-way", "journal": False}, "journal", "needs the journal"),
        (BucketMirrorOptions, {"dask_address": "localhost:8786"}, "dask_address", "Dask scheduler"),
        (EtcdMigrationOptions, {"statefulset": "Etcd_1"}, "statefulset", "not a Kubernetes name"),
        (EtcdMigrationOptions, {"target_replicas": 4}, "target_replicas", "is even"),
        (ResourceBackupOptions, {"bucket": "b", "keep_last": 0}, "keep_last", "greater than or equal"),
        (ResourceBackupOptions, {"bucket": "b", "label_selector": "app in (x"}, "label_selector", ""),
        (ResourceBackupOptions, {"bucket": "b", "prefix": "a//b"}, "prefix", "segment"),
        (ResourceBackupOptions, {"bucket": "b", "backup_name": "Bad_Name"}, "backup_name", "backup name"),
        (ResourceRestoreOptions, {"bucket": "b", "backup_name": "x", "namespace_mapping": "a"}, "", "no ':'"),
        (AppMigrationOptions, {"bucket": "b", "namespaces": []}, "namespaces", "at least 1"),
        (AppMigrationOptions, {"bucket": "b", "namespaces": ["a"], "hooks": [{}]}, "hooks", "quiesce"),
        (AppMigrationOptions, {"bucket": "b", "namespaces": ["a"], "quiesce": "hooks"}, "hooks", "empty"),
        (AppMigrationOptions, {"bucket": "b", "namespaces": ["a"], "transforms": "{"}, "transforms", "JSON"),
        (RestoreBackupOptions, {"target_pvc": "no-slash"}, "target_pvc", "<namespace>/<claim>"),
    ],
)
def test_the_models_run_the_flows_checks(
    model: type[FlowOptions], data: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(InputError) as err:
        _merge(model, data)
    assert err.value.field.startswith(f"options.{field}"), err.value
    assert problem in err.value.problem and err.value.fix


def test_a_mirror_prefix_without_a_bucket_is_refused_once_the_blocks_are_resolved() -> None:
    """The options' bucket may come from an S3Bucket block, so the model accepts a prefix alone;
    the flow's first step (after resolving the blocks) refuses it before any request is sent."""
    from pydantic import SecretStr

    from blocks import ObjectStore
    from tasks.s3_mirror_pass import open_session

    assert BucketMirrorOptions.model_validate({"prefix": "x"}).prefix == "x"
    dead = ObjectStore(endpoint="127.0.0.1:9", access_key="k", secret_key=SecretStr("s" * 20))
    with pytest.raises(InputError) as err:
        open_session(dead, dead, None, None, "x", None, 4)
    assert err.value.field == "bucket" and "need a source bucket" in err.value.problem


def test_the_backup_job_is_a_typed_model_that_still_takes_the_mapping() -> None:
    for path in sorted((ROOT / "deployments" / "jobs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        spec = BackupJobSpec.model_validate(data)
        assert spec.config() == parse_job(data)
        again = BackupJobSpec.model_validate(spec.model_dump(mode="json"))  # as Prefect stores it
        assert again.config() == parse_job(job_to_parameters(parse_job(data)))
    one: dict[str, Any] = {"job": "j", "type": "files", "source": {"target": ["/srv"]}}
    one["storages"] = [{"storage": "local", "backup_dir": "/b", "store": {"month": 2}}]  # nxs aliases
    assert BackupJobSpec.model_validate(one).config().enabled_storages[0].store.months == 2
    bad = {**one, "storages": [{"storage": "local", "backup_dir": "/b", "store": {"days": -1}}]}
    with pytest.raises(ValidationError) as caught:
        BackupJobSpec.model_validate(bad)
    assert "storages[0].store.days" in str(caught.value) and "Fix:" in str(caught.value)
    schema = parameter_schema(_load("flows/backup.py:scheduled_backup")).model_dump()
    job = schema["definitions"]["BackupJobSpec"]["properties"]
    assert job["compression"]["enum"] == ["gzip", "zstd"]
    errors = validate({"job": {**one, "compression": "lz4"}}, schema, preprocess=True, raise_on_error=False)
    assert errors, "an unknown compression is refused before the run"


def test_the_options_in_prefect_yaml_pass_their_models() -> None:
    """The deployments' options pass the validators too (the schema check is in test_deployments)."""
    entries = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    checked = 0
    for entry in entries:
        if entry["entrypoint"] not in FLOWS:
            continue
        param, model = FLOWS[entry["entrypoint"]]
        given = entry.get("parameters", {}).get(param)
        if given is None:
            continue
        try:
            model.model_validate(given)
        except ValidationError as exc:  # per-run fields (backup_name, namespaces) come from the form
            assert {e["type"] for e in exc.errors()} == {"missing"}, (entry["name"], exc)
        checked += 1
    assert checked >= 10
