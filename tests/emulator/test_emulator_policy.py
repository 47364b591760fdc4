"""Least privilege: RAM-style policies per access key, evaluated by the running emulator."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client

from kmsbeam import ConfigurationError
from kmsbeam.emulator import AccessKey, EmulatorServer, Policy
from tests.emulator.conftest import INGEST, READER, client_for, sdk_error


def _tagged_key(admin: Client, team: str) -> str:
    return str(admin.create_key(models.CreateKeyRequest(
        tags=json.dumps([{"TagKey": "team", "TagValue": team}]))).body.key_metadata.key_id)  # fmt: skip


def test_ingestion_can_make_data_keys_but_not_decrypt(admin: Client, server: EmulatorServer) -> None:
    key = _tagged_key(admin, "analytics")
    ingest = client_for(server.endpoint, *INGEST)
    dk = ingest.generate_data_key(models.GenerateDataKeyRequest(key_id=key, encryption_context={"t": "1"})).body
    err = sdk_error(lambda: ingest.decrypt(models.DecryptRequest(
        ciphertext_blob=dk.ciphertext_blob, encryption_context={"t": "1"})))  # fmt: skip
    assert (err.code, err.status_code) == ("Forbidden.NoPermission", 403)
    for call in (lambda: ingest.create_key(models.CreateKeyRequest()),
                 lambda: ingest.disable_key(models.DisableKeyRequest(key_id=key)),
                 lambda: ingest.encrypt(models.EncryptRequest(key_id=key, plaintext="x")),
                 lambda: ingest.list_keys(models.ListKeysRequest()),
                 lambda: ingest.create_alias(models.CreateAliasRequest(alias_name="alias/i", key_id=key))):  # fmt: skip
        assert sdk_error(call).code == "Forbidden.NoPermission"
    reader = client_for(server.endpoint, *READER)
    out = reader.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob, encryption_context={"t": "1"}))
    assert out.body.plaintext == dk.plaintext
    assert sdk_error(lambda: reader.generate_data_key(models.GenerateDataKeyRequest(key_id=key))).code == (
        "Forbidden.NoPermission")  # fmt: skip
    assert admin.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata.key_state == "Enabled"


def test_tag_condition_limits_the_reader(admin: Client, server: EmulatorServer) -> None:
    key = _tagged_key(admin, "billing")
    untagged = admin.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    reader = client_for(server.endpoint, *READER)
    for k in (key, untagged):
        blob = admin.encrypt(models.EncryptRequest(key_id=k, plaintext="x")).body.ciphertext_blob
        err = sdk_error(lambda b=blob: reader.decrypt(models.DecryptRequest(ciphertext_blob=b)))
        assert (err.code, err.status_code) == ("Forbidden.NoPermission", 403)
    admin.tag_resource(models.TagResourceRequest(key_id=key, tags=json.dumps(
        [{"TagKey": "team", "TagValue": "analytics"}])))  # fmt: skip
    blob = admin.encrypt(models.EncryptRequest(key_id=key, plaintext="x")).body.ciphertext_blob
    assert reader.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == "x"


def test_aliases_are_resources_too(admin: Client, server: EmulatorServer) -> None:
    key = admin.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    name = f"alias/ingest-{uuid.uuid4().hex[:6]}"
    admin.create_alias(models.CreateAliasRequest(alias_name=name, key_id=key))
    ingest = client_for(server.endpoint, *INGEST)
    assert ingest.generate_data_key(models.GenerateDataKeyRequest(key_id=name)).body.key_id == key
    assert ingest.describe_key(models.DescribeKeyRequest(key_id=name)).body.key_metadata.key_id == key


def test_a_policy_on_an_alias_allows_only_through_that_alias(tmp_path: Path) -> None:
    by_alias = {"Statement": [{"Effect": "Allow", "Action": "kms:GenerateDataKey",
                               "Resource": "acs:kms:cn-hangzhou:*:alias/pii-*"}]}  # fmt: skip
    keys = [AccessKey("root", "r"), AccessKey("app", "a", policy=by_alias)]
    with EmulatorServer(tmp_path, keys, rotation_check_seconds=None) as srv:
        root, app = client_for(srv.endpoint, "root", "r"), client_for(srv.endpoint, "app", "a")
        key = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        root.create_alias(models.CreateAliasRequest(alias_name="alias/pii-users", key_id=key))
        root.create_alias(models.CreateAliasRequest(alias_name="alias/other", key_id=key))
        assert app.generate_data_key(models.GenerateDataKeyRequest(key_id="alias/pii-users")).body.key_id == key
        for name in (key, "alias/other", "alias/pii-missing"):
            err = sdk_error(lambda n=name: app.generate_data_key(models.GenerateDataKeyRequest(key_id=n)))
            assert err.code == ("Forbidden.AliasNotFound" if name == "alias/pii-missing"
                                else "Forbidden.NoPermission"), name  # fmt: skip


def test_explicit_deny_wins_and_no_policy_is_full_access(tmp_path: Path) -> None:
    deny = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                          {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "acs:kms:*:*:key/*"}]}  # fmt: skip
    keys = [AccessKey("root", "r"), AccessKey("nodecrypt", "n", policy=deny),
            AccessKey("nothing", "z", policy={"Statement": []})]  # fmt: skip
    with EmulatorServer(tmp_path, keys, rotation_check_seconds=None) as srv:
        root, nodecrypt = client_for(srv.endpoint, "root", "r"), client_for(srv.endpoint, "nodecrypt", "n")
        key = nodecrypt.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        blob = nodecrypt.encrypt(models.EncryptRequest(key_id=key, plaintext="x")).body.ciphertext_blob
        assert sdk_error(lambda: nodecrypt.decrypt(models.DecryptRequest(ciphertext_blob=blob))).code == (
            "Forbidden.NoPermission")  # fmt: skip
        assert root.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == "x"
        nothing = client_for(srv.endpoint, "nothing", "z")
        for call in (lambda: nothing.list_keys(models.ListKeysRequest()),
                     lambda: nothing.describe_key(models.DescribeKeyRequest(key_id=key)),
                     lambda: nothing.describe_key(models.DescribeKeyRequest(key_id=str(uuid.uuid4()))),
                     lambda: nothing.decrypt(models.DecryptRequest(ciphertext_blob=blob))):  # fmt: skip
            assert sdk_error(call).code == "Forbidden.NoPermission"


def test_every_action_is_authorized(tmp_path: Path) -> None:
    from kmsbeam.emulator._actions import ACTIONS

    key = AccessKey("denied", "d", policy={"Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]})
    with EmulatorServer(tmp_path, [AccessKey("root", "r"), key], rotation_check_seconds=None) as srv:
        root = client_for(srv.endpoint, "root", "r")
        key_id = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        blob = root.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x")).body.ciphertext_blob
        values = {"KeyId": key_id, "AliasName": "alias/x", "CiphertextBlob": blob, "Plaintext": "x",
                  "DestinationKeyId": key_id, "PendingWindowInDays": "7", "KeyVersionId": "v",
                  "EnableAutomaticRotation": "false", "Tags": '[{"TagKey":"a","TagValue":"b"}]',
                  "TagKeys": '["a"]', "WrappingAlgorithm": "RSAES_OAEP_SHA_256",
                  "WrappingKeySpec": "RSA_2048", "EncryptedKeyMaterial": "AAAA", "ImportToken": "t",
                  "Description": "d"}  # fmt: skip
        from tests.emulator.conftest import call_raw

        for name, action in ACTIONS.items():
            query = {p: values[p] for p in action.required}
            raw = call_raw(srv.endpoint, name, query, ak="denied", secret="d")
            assert (raw.status, raw.body["Code"]) == (403, "Forbidden.NoPermission"), name
        assert len(root.list_keys(models.ListKeysRequest()).body.keys.key) == 1


@pytest.mark.parametrize("document, words", [
    ("{not json", "JSON"),
    ({"Statement": [{"Effect": "Maybe", "Action": "kms:*", "Resource": "*"}]}, "Effect"),
    ({"Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}, "kms:"),
    ({"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}, "Resource"),
    ({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*", "Principal": "*"}]}, "Principal"),
    ({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                     "Condition": {"NumericEquals": {"kms:tag/a": "1"}}}]}, "NumericEquals"),
    ({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                     "Condition": {"StringEquals": {"acs:UserAgent": "x"}}}]}, "acs:UserAgent"),
    ({"Version": "2", "Statement": []}, "Version"),
])  # fmt: skip
def test_bad_policies_fail_at_construction(document: object, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        Policy(document)  # type: ignore[arg-type]


def test_policy_evaluation_rules() -> None:
    policy = Policy({"Statement": [
        {"Effect": "Allow", "Action": ["kms:Generate*", "kms:describekey"], "Resource": "acs:kms:*:*:key/k?"},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:tag/env": "prod"}, "IpAddress": {"acs:SourceIp": "10.0.0.0/8"}}},
        {"Effect": "Deny", "Action": "kms:GenerateDataKey", "Resource": "acs:kms:*:*:key/kx"}]})  # fmt: skip
    arn = "acs:kms:cn-hangzhou:1:key/"

    def facts(tags: dict[str, str], ip: str = "10.1.2.3"):  # type: ignore[no-untyped-def]
        return lambda name: ip if name == "acs:SourceIp" else tags.get(name.removeprefix("kms:tag/"))

    assert policy.decide("kms:GenerateDataKey", [arn + "k1"], facts({})) is True
    assert policy.decide("kms:DescribeKey", [arn + "k1"], facts({})) is True
    assert policy.decide("kms:GenerateDataKey", [arn + "kx"], facts({})) is False
    assert policy.decide("kms:GenerateDataKey", [arn + "k12"], facts({})) is None
    assert policy.decide("kms:Decrypt", [arn + "k1"], facts({})) is True  # untagged: NotEquals holds
    assert policy.decide("kms:Decrypt", [arn + "k1"], facts({"env": "prod"})) is None
    assert policy.decide("kms:Decrypt", [arn + "k1"], facts({}, ip="192.168.0.1")) is None
    assert policy.needs_tags and not Policy({"Statement": []}).needs_tags
