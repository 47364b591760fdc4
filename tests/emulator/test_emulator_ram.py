"""The emulator's RAM model matches Alibaba's user guide (2019): containers, aliases with their
keys, acs:CurrentTime, the deletion window, alias names, DeleteKeyMaterial and
UpdateKeyDescription. Everything goes through the official SDK to a running emulator."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_der_public_key

from kmsbeam import ConfigurationError
from kmsbeam.emulator import AccessKey, EmulatorServer, Policy
from tests.emulator.conftest import client_for, sdk_error

ROOT = ("root", "root-secret-1")
APP = ("app", "app-secret-2")


def _allow(actions: list[str], resources: list[str], condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return {"Version": "1", "Statement": [statement]}


@contextmanager
def _app(data: Path, policy: dict[str, Any]) -> Iterator[tuple[Client, Client]]:
    """Root and an app principal holding ``policy`` on a running emulator over ``data``."""
    keys = [AccessKey(*ROOT), AccessKey(*APP, policy=policy)]
    with EmulatorServer(data, keys, rotation_check_seconds=None) as srv:
        yield client_for(srv.endpoint, *ROOT), client_for(srv.endpoint, *APP)


def _new_keys(data: Path, n: int) -> list[str]:
    with _app(data, {"Statement": []}) as (root, _):
        return [root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id for _ in range(n)]


def _denied(call: Callable[[], Any]) -> bool:
    err = sdk_error(call)
    return (err.code, err.status_code) == ("Forbidden.NoPermission", 403)


def test_key_and_alias_containers(tmp_path: Path) -> None:
    containers = _allow(["kms:CreateKey", "kms:ListKeys", "kms:ListAliases"],
                        ["acs:kms:*:*:key", "acs:kms:*:*:alias"])  # fmt: skip
    with _app(tmp_path / "a", containers) as (_, app):
        assert app.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        assert app.list_keys(models.ListKeysRequest()).body.total_count == 1
        assert app.list_aliases(models.ListAliasesRequest()).body.total_count == 0
    keys_only = _allow(["kms:CreateKey", "kms:ListKeys", "kms:ListAliases"], ["acs:kms:*:*:key"])
    with _app(tmp_path / "b", keys_only) as (_, app):
        assert app.list_keys(models.ListKeysRequest()).body.total_count == 0
        assert _denied(lambda: app.list_aliases(models.ListAliasesRequest()))
    members_only = _allow(["kms:CreateKey", "kms:ListKeys"], ["acs:kms:*:*:key/*"])
    with _app(tmp_path / "c", members_only) as (_, app):
        assert _denied(lambda: app.create_key(models.CreateKeyRequest()))
        assert _denied(lambda: app.list_keys(models.ListKeysRequest()))


def test_update_alias_needs_the_alias_the_old_key_and_the_new_key(tmp_path: Path) -> None:
    old, new = _new_keys(tmp_path, 2)
    alias, arn = "alias/app", "acs:kms:*:*:"
    update = models.UpdateAliasRequest(alias_name=alias, key_id=new)
    without_old = _allow(["kms:UpdateAlias"], [f"{arn}{alias}", f"{arn}key/{new}"])
    with _app(tmp_path, without_old) as (root, app):
        root.create_alias(models.CreateAliasRequest(alias_name=alias, key_id=old))
        assert _denied(lambda: app.update_alias(update))
    without_new = _allow(["kms:UpdateAlias"], [f"{arn}{alias}", f"{arn}key/{old}"])
    with _app(tmp_path, without_new) as (_, app):
        assert _denied(lambda: app.update_alias(update))
    without_alias = _allow(["kms:UpdateAlias"], [f"{arn}key/{old}", f"{arn}key/{new}"])
    with _app(tmp_path, without_alias) as (_, app):
        assert _denied(lambda: app.update_alias(update))
    all_three = _allow(["kms:UpdateAlias"], [f"{arn}{alias}", f"{arn}key/{old}", f"{arn}key/{new}"])
    with _app(tmp_path, all_three) as (root, app):
        app.update_alias(update)
        assert root.describe_key(models.DescribeKeyRequest(key_id=alias)).body.key_metadata.key_id == new


def test_delete_alias_needs_the_alias_and_its_key(tmp_path: Path) -> None:
    (key,) = _new_keys(tmp_path, 1)
    alias = "alias/doomed"
    delete = models.DeleteAliasRequest(alias_name=alias)
    with _app(tmp_path, _allow(["kms:DeleteAlias"], [f"acs:kms:*:*:{alias}"])) as (root, app):
        root.create_alias(models.CreateAliasRequest(alias_name=alias, key_id=key))
        assert _denied(lambda: app.delete_alias(delete))
    with _app(tmp_path, _allow(["kms:DeleteAlias"], [f"acs:kms:*:*:key/{key}"])) as (_, app):
        assert _denied(lambda: app.delete_alias(delete))
    both = _allow(["kms:DeleteAlias"], [f"acs:kms:*:*:{alias}", f"acs:kms:*:*:key/{key}"])
    with _app(tmp_path, both) as (root, app):
        app.delete_alias(delete)
        assert root.list_aliases(models.ListAliasesRequest()).body.total_count == 0


def test_create_alias_needs_the_alias_and_the_key(tmp_path: Path) -> None:
    (key,) = _new_keys(tmp_path, 1)
    create = models.CreateAliasRequest(alias_name="alias/new", key_id=key)
    with _app(tmp_path, _allow(["kms:CreateAlias"], ["acs:kms:*:*:alias/new"])) as (_, app):
        assert _denied(lambda: app.create_alias(create))
    both = _allow(["kms:CreateAlias"], ["acs:kms:*:*:alias/new", f"acs:kms:*:*:key/{key}"])
    with _app(tmp_path, both) as (_, app):
        app.create_alias(create)


@pytest.mark.parametrize("operator, when, allowed", [
    ("DateLessThan", "2999-01-01T00:00:00Z", True),
    ("DateLessThan", "2001-01-01T08:00:00+08:00", False),
    ("DateGreaterThan", "2001-01-01T00:00:00Z", True),
    ("DateGreaterThanEquals", "2999-01-01", False),
    ("DateNotEquals", "2001-01-01T00:00:00Z", True),
])  # fmt: skip
def test_current_time_conditions(tmp_path: Path, operator: str, when: str, allowed: bool) -> None:
    (key,) = _new_keys(tmp_path, 1)
    policy = _allow(["kms:GenerateDataKey"], ["acs:kms:*:*:key/*"], {operator: {"acs:CurrentTime": when}})
    with _app(tmp_path, policy) as (_, app):
        call = lambda: app.generate_data_key(models.GenerateDataKeyRequest(key_id=key))  # noqa: E731
        assert call().body.plaintext if allowed else _denied(call)


def test_current_time_needs_iso_dates() -> None:
    with pytest.raises(ConfigurationError, match="ISO 8601"):
        Policy(_allow(["kms:*"], ["*"], {"DateLessThan": {"acs:CurrentTime": "next tuesday"}}))


def test_deletion_window_is_7_to_30_days(tmp_path: Path) -> None:
    with _app(tmp_path, {"Statement": []}) as (root, _):
        key = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        for days in (6, 31, 366):
            err = sdk_error(lambda d=days: root.schedule_key_deletion(
                models.ScheduleKeyDeletionRequest(key_id=key, pending_window_in_days=d)))  # fmt: skip
            assert (err.code, err.status_code) == ("InvalidParameter", 400), days
        root.schedule_key_deletion(models.ScheduleKeyDeletionRequest(key_id=key, pending_window_in_days=30))
        assert root.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata.key_state == (
            "PendingDeletion")  # fmt: skip


@pytest.mark.parametrize("name, ok", [
    ("alias/a-b_c/d9", True), ("alias/" + "x" * 255, True), ("alias/" + "x" * 256, False),
    ("alias/a:b", False), ("alias/", False), ("alias/a.b", False), ("alias/acs-mine", False),
])  # fmt: skip
def test_alias_names(tmp_path: Path, name: str, ok: bool) -> None:
    with _app(tmp_path, {"Statement": []}) as (root, _):
        key = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        create = lambda: root.create_alias(models.CreateAliasRequest(alias_name=name, key_id=key))  # noqa: E731
        if ok:
            create()
            assert root.describe_key(models.DescribeKeyRequest(key_id=name)).body.key_metadata.key_id == key
        else:
            assert sdk_error(create).code == "InvalidParameter"


def test_update_key_description(tmp_path: Path) -> None:
    (key,) = _new_keys(tmp_path, 1)
    with _app(tmp_path, _allow(["kms:DescribeKey"], ["acs:kms:*:*:key/*"])) as (root, app):
        request = models.UpdateKeyDescriptionRequest(key_id=key, description="payments, 2026")
        assert _denied(lambda: app.update_key_description(request))
        root.update_key_description(request)
        assert app.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata.description == (
            "payments, 2026")  # fmt: skip


def test_delete_key_material(tmp_path: Path) -> None:
    with _app(tmp_path, _allow(["kms:DescribeKey"], ["acs:kms:*:*:key/*"])) as (root, app):
        key = root.create_key(models.CreateKeyRequest(origin="EXTERNAL")).body.key_metadata.key_id
        params = root.get_parameters_for_import(models.GetParametersForImportRequest(
            key_id=key, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048")).body  # fmt: skip
        public: Any = load_der_public_key(base64.b64decode(params.public_key))
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        root.import_key_material(models.ImportKeyMaterialRequest(
            key_id=key, import_token=params.import_token,
            encrypted_key_material=base64.b64encode(public.encrypt(os.urandom(32), oaep)).decode()))  # fmt: skip
        assert root.generate_data_key(models.GenerateDataKeyRequest(key_id=key)).body.plaintext
        assert _denied(lambda: app.delete_key_material(models.DeleteKeyMaterialRequest(key_id=key)))
        root.delete_key_material(models.DeleteKeyMaterialRequest(key_id=key))
        assert app.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata.key_state == "PendingImport"
        err = sdk_error(lambda: root.generate_data_key(models.GenerateDataKeyRequest(key_id=key)))
        assert err.code == "Rejected.PendingImport"
        internal = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        err = sdk_error(lambda: root.delete_key_material(models.DeleteKeyMaterialRequest(key_id=internal)))
        assert err.code == "UnsupportedOperation"
