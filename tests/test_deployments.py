"""prefect.yaml covers every flow, and its parameters are valid against the flow signatures."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect._internal.schemas.validators import validate_values_conform_to_schema
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate

ROOT = Path(__file__).resolve().parents[1]
DOC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
ENTRIES = DOC["deployments"]
FLOWS = {
    "flows/etcd_migration.py:etcd_stretch_migration",
    "flows/bucket_mirror.py:bucket_mirror",
    "flows/app_migration.py:app_migration",
    "flows/app_migration.py:activate",
    "flows/app_migration.py:deactivate",
    "flows/app_migration.py:reactivate",
    "flows/resource_backup.py:resource_backup",
    "flows/resource_backup.py:resource_restore",
    "flows/backup.py:scheduled_backup",
    "flows/restore.py:restore_backup",
}
REF = {"$ref": {"block_document_id": "6f1d8a0e-8d5a-4d55-9b7c-2f7f4c7a9e10"}}


def _load(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_every_flow_has_a_deployment_on_the_process_pool() -> None:
    assert {e["entrypoint"] for e in ENTRIES} == FLOWS
    assert {e["work_pool"]["name"] for e in ENTRIES} == {"stateferry"}
    assert len({e["name"] for e in ENTRIES}) == len(ENTRIES)


def test_migrations_are_manual_and_backups_are_scheduled_one_at_a_time() -> None:
    for e in ENTRIES:
        scheduled = bool(e.get("schedules"))
        if e["entrypoint"] in {
            "flows/backup.py:scheduled_backup",
            "flows/resource_backup.py:resource_backup",
        }:
            assert scheduled, e["name"]
            assert e.get("concurrency_limit") == 1, e["name"]
        else:
            assert not scheduled, e["name"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_parameters_conform_to_the_flow_signature(entry: dict[str, Any]) -> None:
    schema = parameter_schema(_load(entry["entrypoint"])).model_dump()
    params = entry.get("parameters", {})
    validate_values_conform_to_schema(params, schema, ignore_required=True)  # what `deploy` checks
    assert validate(params, schema, preprocess=True, ignore_required=True, raise_on_error=False) == []
    unknown = set(params) - set(schema["properties"])
    assert not unknown, f"{entry['name']}: parameters not in the flow signature: {unknown}"


@pytest.mark.parametrize(
    ("entrypoint", "block_params"),
    [
        ("flows/etcd_migration.py:etcd_stretch_migration", ["source", "target"]),
        ("flows/bucket_mirror.py:bucket_mirror", ["source", "destination"]),
        ("flows/app_migration.py:app_migration", ["source", "target", "object_store"]),
        ("flows/app_migration.py:deactivate", ["cluster"]),
        ("flows/app_migration.py:reactivate", ["cluster"]),
        ("flows/resource_backup.py:resource_backup", ["source", "object_store"]),
    ],
)
def test_saved_blocks_can_be_passed_to_deployments(entrypoint: str, block_params: list[str]) -> None:
    """A saved block is sent as a reference; both of Prefect's validators must accept it."""
    schema = parameter_schema(_load(entrypoint)).model_dump()
    params = dict.fromkeys(block_params, REF)
    validate_values_conform_to_schema(params, schema, ignore_required=True)  # deployment create
    errors = validate(params, schema, preprocess=True, ignore_required=True, raise_on_error=False)
    assert errors == []  # flow run create


def test_a_wrong_parameter_type_is_refused() -> None:
    schema = parameter_schema(_load("flows/etcd_migration.py:etcd_stretch_migration")).model_dump()
    errors = validate(
        {"keep_revisions": "many"}, schema, preprocess=True, ignore_required=True, raise_on_error=False
    )
    assert errors, "a non-integer keep_revisions must be refused"


def test_serve_builds_every_deployment() -> None:
    from deployments.serve import all_deployments

    names = {d.name for d in all_deployments()}
    assert names == {e["name"] for e in ENTRIES}
