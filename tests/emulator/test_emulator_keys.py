"""Key, version, alias and tag management through the official SDK."""

from __future__ import annotations

import json
import uuid

from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client

from kmsbeam.emulator import EmulatorServer
from tests.emulator.conftest import sdk_error


def test_create_and_describe_key(admin: Client, server: EmulatorServer) -> None:
    body = admin.create_key(models.CreateKeyRequest(
        description="orders", protection_level="HSM", key_spec="Aliyun_AES_256",
        key_usage="ENCRYPT/DECRYPT")).body  # fmt: skip
    meta = body.key_metadata
    assert body.request_id and meta.key_state == "Enabled" and meta.protection_level == "HSM"
    assert meta.arn == f"acs:kms:cn-hangzhou:{server.engine.account}:key/{meta.key_id}"
    assert meta.creator == server.engine.account and meta.primary_key_version
    described = admin.describe_key(models.DescribeKeyRequest(key_id=meta.arn)).body.key_metadata
    assert (described.key_id, described.description, described.origin) == (
        meta.key_id, "orders", "Aliyun_KMS")  # fmt: skip


def test_create_key_with_rotation_and_tags(admin: Client) -> None:
    meta = admin.create_key(models.CreateKeyRequest(
        enable_automatic_rotation=True, rotation_interval="30d",
        tags=json.dumps([{"TagKey": "team", "TagValue": "ingest"}]))).body.key_metadata  # fmt: skip
    assert meta.automatic_rotation == "Enabled" and meta.rotation_interval == "2592000s"
    assert meta.next_rotation_date
    tags = admin.list_resource_tags(models.ListResourceTagsRequest(key_id=meta.key_id)).body
    assert [(t.tag_key, t.tag_value, t.key_id) for t in tags.tags.tag] == [
        ("team", "ingest", meta.key_id)]  # fmt: skip


def test_create_key_rejects_bad_options_and_writes_nothing(admin: Client) -> None:
    before = admin.list_keys(models.ListKeysRequest(page_size=100)).body.total_count
    for request in (models.CreateKeyRequest(key_spec="RSA_2048"),
                    models.CreateKeyRequest(protection_level="CLOUD"),
                    models.CreateKeyRequest(enable_automatic_rotation=True),
                    models.CreateKeyRequest(tags="[{\"TagKey\": \"acs:x\", \"TagValue\": \"v\"}]"),
                    models.CreateKeyRequest(tags="not json"),
                    models.CreateKeyRequest(dkmsinstance_id="kst-123")):  # fmt: skip
        err = sdk_error(lambda r=request: admin.create_key(r))
        assert (err.code, err.status_code) == ("InvalidParameter", 400), request
    assert admin.list_keys(models.ListKeysRequest(page_size=100)).body.total_count == before


def test_list_keys_pages_and_filters(admin: Client) -> None:
    ids = {admin.create_key(models.CreateKeyRequest()).body.key_metadata.key_id for _ in range(3)}
    total = admin.list_keys(models.ListKeysRequest(page_size=100)).body.total_count
    seen: list[str] = []
    for page in range(1, total // 2 + 2):
        body = admin.list_keys(models.ListKeysRequest(page_number=page, page_size=2)).body
        assert (body.page_number, body.page_size, body.total_count) == (page, 2, total)
        seen += [k.key_id for k in body.keys.key]
    assert len(seen) == total == len(set(seen)) and ids <= set(seen)
    disabled = next(iter(ids))
    admin.disable_key(models.DisableKeyRequest(key_id=disabled))
    only = admin.list_keys(models.ListKeysRequest(
        page_size=100, filters=json.dumps([{"Key": "KeyState", "Values": ["Disabled"]}]))).body  # fmt: skip
    assert disabled in {k.key_id for k in only.keys.key}
    assert not ids - {disabled} & {k.key_id for k in only.keys.key}
    err = sdk_error(lambda: admin.list_keys(models.ListKeysRequest(page_size=101)))
    assert err.code == "InvalidParameter"


def test_enable_disable_and_deletion_lifecycle(admin: Client, key_id: str) -> None:
    def state() -> str:
        return str(admin.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata.key_state)

    admin.disable_key(models.DisableKeyRequest(key_id=key_id))
    assert state() == "Disabled"
    admin.enable_key(models.EnableKeyRequest(key_id=key_id))
    assert state() == "Enabled"
    admin.schedule_key_deletion(models.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7))
    meta = admin.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert meta.key_state == "PendingDeletion" and meta.delete_date
    err = sdk_error(lambda: admin.enable_key(models.EnableKeyRequest(key_id=key_id)))
    assert (err.code, err.status_code) == ("Rejected.PendingDeletion", 409)
    admin.cancel_key_deletion(models.CancelKeyDeletionRequest(key_id=key_id))
    assert state() == "Enabled"
    err = sdk_error(lambda: admin.schedule_key_deletion(
        models.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=3)))  # fmt: skip
    assert (err.code, state()) == ("InvalidParameter", "Enabled")


def test_unknown_key_and_alias(admin: Client) -> None:
    err = sdk_error(lambda: admin.describe_key(models.DescribeKeyRequest(key_id=str(uuid.uuid4()))))
    assert (err.code, err.status_code) == ("Forbidden.KeyNotFound", 404)
    err = sdk_error(lambda: admin.describe_key(models.DescribeKeyRequest(key_id="alias/nope")))
    assert (err.code, err.status_code) == ("Forbidden.AliasNotFound", 404)


def test_key_versions(admin: Client, key_id: str) -> None:
    new = admin.create_key_version(models.CreateKeyVersionRequest(key_id=key_id)).body.key_version
    assert new.key_id == key_id and new.key_version_id and new.creation_date
    listed = admin.list_key_versions(models.ListKeyVersionsRequest(key_id=key_id)).body
    assert listed.total_count == 2 and new.key_version_id in [v.key_version_id for v in listed.key_versions.key_version]
    one = admin.describe_key_version(models.DescribeKeyVersionRequest(
        key_id=key_id, key_version_id=new.key_version_id)).body.key_version  # fmt: skip
    assert (one.key_id, one.key_version_id) == (key_id, new.key_version_id)
    meta = admin.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert meta.primary_key_version == new.key_version_id
    err = sdk_error(lambda: admin.describe_key_version(models.DescribeKeyVersionRequest(
        key_id=key_id, key_version_id=str(uuid.uuid4()))))  # fmt: skip
    assert err.code == "Forbidden.KeyNotFound"


def test_update_rotation_policy(admin: Client, key_id: str) -> None:
    admin.update_rotation_policy(models.UpdateRotationPolicyRequest(
        key_id=key_id, enable_automatic_rotation=True, rotation_interval="604800s"))  # fmt: skip
    meta = admin.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert (meta.automatic_rotation, meta.rotation_interval) == ("Enabled", "604800s")
    admin.update_rotation_policy(models.UpdateRotationPolicyRequest(
        key_id=key_id, enable_automatic_rotation=False))  # fmt: skip
    meta = admin.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert meta.automatic_rotation == "Disabled"
    err = sdk_error(lambda: admin.update_rotation_policy(models.UpdateRotationPolicyRequest(
        key_id=key_id, enable_automatic_rotation=True, rotation_interval="1d")))  # fmt: skip
    assert err.code == "InvalidParameter"


def test_aliases(admin: Client, key_id: str) -> None:
    other = admin.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    name = f"alias/test-{uuid.uuid4().hex[:8]}"
    admin.create_alias(models.CreateAliasRequest(alias_name=name, key_id=key_id))
    assert admin.describe_key(models.DescribeKeyRequest(key_id=name)).body.key_metadata.key_id == key_id
    err = sdk_error(lambda: admin.create_alias(models.CreateAliasRequest(alias_name=name, key_id=other)))
    assert (err.code, err.status_code) == ("AliasAlreadyExists", 400)
    by_key = admin.list_aliases_by_key_id(models.ListAliasesByKeyIdRequest(key_id=key_id)).body
    assert [(a.alias_name, a.key_id) for a in by_key.aliases.alias] == [(name, key_id)]
    assert by_key.aliases.alias[0].alias_arn.endswith(f":{name}")
    admin.update_alias(models.UpdateAliasRequest(alias_name=name, key_id=other))
    assert admin.describe_key(models.DescribeKeyRequest(key_id=name)).body.key_metadata.key_id == other
    listed = admin.list_aliases(models.ListAliasesRequest(page_size=100)).body
    assert name in [a.alias_name for a in listed.aliases.alias] and listed.total_count >= 1
    admin.delete_alias(models.DeleteAliasRequest(alias_name=name))
    err = sdk_error(lambda: admin.delete_alias(models.DeleteAliasRequest(alias_name=name)))
    assert (err.code, err.status_code) == ("Forbidden.AliasNotFound", 404)
    err = sdk_error(lambda: admin.create_alias(models.CreateAliasRequest(alias_name="bad", key_id=key_id)))
    assert err.code == "InvalidParameter"


def test_tags(admin: Client, key_id: str) -> None:
    admin.tag_resource(models.TagResourceRequest(key_id=key_id, tags=json.dumps(
        [{"TagKey": "team", "TagValue": "a"}, {"TagKey": "env", "TagValue": "dev"}])))  # fmt: skip
    admin.untag_resource(models.UntagResourceRequest(key_id=key_id, tag_keys=json.dumps(["env"])))
    tags = admin.list_resource_tags(models.ListResourceTagsRequest(key_id=key_id)).body.tags.tag
    assert [(t.tag_key, t.tag_value) for t in tags] == [("team", "a")]
    err = sdk_error(lambda: admin.tag_resource(models.TagResourceRequest(key_id=key_id, tags="[]")))
    assert err.code == "InvalidParameter"
    err = sdk_error(lambda: admin.tag_resource(models.TagResourceRequest(
        secret_name="s", key_id=key_id, tags='[{"TagKey": "a", "TagValue": "b"}]')))  # fmt: skip
    assert err.code == "InvalidParameter"
