"""The key, version, alias and tag actions, and the table of every action the emulator serves.

Each handler reads its parameters, authorizes what it touches, calls ``KmsEngine`` once for
any change (one transaction, so nothing is written on an error) and returns the response
fields named as the SDK's ``*ResponseBody`` models read them. The crypto actions live in
``_crypto``. Parameters the SDK can send for features the emulator does not have (dedicated
KMS instances, key policies, secrets, certificates) are ``InvalidParameter``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kmsbeam.emulator import _crypto
from kmsbeam.emulator._call import Action, Call
from kmsbeam.emulator._params import invalid
from kmsbeam.kms import AliasInfo, KeyMetadata, KeyVersion

__all__ = ["ACTIONS", "key_metadata"]

T = TypeVar("T")
_FILTER_FIELDS = {
    "KeyState": "key_state",
    "KeySpec": "key_spec",
    "KeyUsage": "key_usage",
    "ProtectionLevel": "protection_level",
}


def unsupported(call: Call, *names: str) -> None:
    """``InvalidParameter`` for parameters of features the emulator does not emulate."""
    for name in names:
        if call.params.text(name):
            raise invalid(f"the parameter {name} is not supported by the kmsbeam emulator")


def key_metadata(call: Call, meta: KeyMetadata) -> dict[str, Any]:
    """The ``KeyMetadata`` object (empty fields left out, as Alibaba does)."""
    out: dict[str, Any] = {k: v for k, v in meta.to_alibaba().items() if v not in ("", None)}
    out["Creator"] = call.engine.account
    return out


def _version(v: KeyVersion) -> dict[str, str]:
    return {"KeyId": v.key_id, "KeyVersionId": v.key_version_id, "CreationDate": v.creation_date}


def _alias(a: AliasInfo) -> dict[str, str]:
    return {"AliasName": a.alias_name, "KeyId": a.key_id, "AliasArn": a.alias_arn}


def _page(
    call: Call, items: Sequence[T], outer: str, inner: str, render: Callable[[T], Any]
) -> dict[str, Any]:
    number, size = call.params.page()
    chunk = items[(number - 1) * size : number * size]
    return {
        outer: {inner: [render(i) for i in chunk]},
        "TotalCount": len(items),
        "PageNumber": number,
        "PageSize": size,
    }


def _key(call: Call, name: str = "KeyId") -> str:
    key = call.params.required(name)
    call.allow_key(key)
    return key


# -- keys ---------------------------------------------------------------------------------
def create_key(call: Call) -> dict[str, Any]:
    p = call.params
    unsupported(call, "DKMSInstanceId", "KeyStorageMechanism", "Policy")
    tags = p.tags() if p.text("Tags") else {}
    options: dict[str, Any] = {}
    for param, arg in (("KeySpec", "key_spec"), ("KeyUsage", "key_usage"),
                       ("ProtectionLevel", "protection_level"), ("Origin", "origin"),
                       ("RotationInterval", "rotation_interval")):  # fmt: skip
        if p.text(param):
            options[arg] = p.text(param)
    rotate = p.boolean("EnableAutomaticRotation")
    if rotate is not None:
        options["enable_automatic_rotation"] = rotate
    call.allow_container("key")
    meta = call.engine.create_key(p.text("Description", "") or "", tags=tags or None, **options)
    call.note(meta.key_id, meta.primary_key_version)
    return {"KeyMetadata": key_metadata(call, meta)}


def describe_key(call: Call) -> dict[str, Any]:
    meta = call.engine.describe_key(_key(call))
    call.note(meta.key_id)
    return {"KeyMetadata": key_metadata(call, meta)}


def list_keys(call: Call) -> dict[str, Any]:
    filters = call.params.json_value("Filters") or []
    wanted: dict[str, set[str]] = {}
    for f in filters if isinstance(filters, list) else [None]:
        values = f.get("Values") if isinstance(f, dict) else None
        key = f.get("Key") if isinstance(f, dict) else None
        if key not in (*_FILTER_FIELDS, "CreatorType") or not isinstance(values, list):
            raise invalid('Filters must be JSON like [{"Key": "KeyState", "Values": ["Enabled"]}]')
        wanted[key] = {str(v) for v in values}
    call.allow_container("key")
    creator_ok = "User" in wanted.pop("CreatorType", {"User"})
    keys = [
        k for k in call.engine.list_keys()
        if creator_ok and all(getattr(k, _FILTER_FIELDS[f]) in v for f, v in wanted.items())
    ]  # fmt: skip
    return _page(call, keys, "Keys", "Key", lambda k: {"KeyId": k.key_id, "KeyArn": k.arn})


def _state_change(method: str) -> Callable[[Call], dict[str, Any]]:
    def handler(call: Call) -> dict[str, Any]:
        meta = getattr(call.engine, method)(_key(call))
        call.note(meta.key_id)
        return {}

    return handler


def schedule_key_deletion(call: Call) -> dict[str, Any]:
    days = call.params.integer("PendingWindowInDays", 7, 30)
    meta = call.engine.schedule_key_deletion(_key(call), days or 0)
    call.note(meta.key_id)
    return {}


def update_key_description(call: Call) -> dict[str, Any]:
    description = call.params.required("Description")
    meta = call.engine.update_key_description(_key(call), description)
    call.note(meta.key_id)
    return {}


def delete_key_material(call: Call) -> dict[str, Any]:
    key = _key(call)
    call.engine.delete_key_material(key)
    return {}


def update_rotation_policy(call: Call) -> dict[str, Any]:
    enable = call.params.boolean("EnableAutomaticRotation")
    interval = call.params.text("RotationInterval") or None
    key = _key(call)
    call.engine.update_rotation_policy(key, bool(enable), interval)
    return {}


# -- versions -----------------------------------------------------------------------------
def create_key_version(call: Call) -> dict[str, Any]:
    version = call.engine.create_key_version(_key(call))
    call.note(version.key_id, version.key_version_id)
    return {"KeyVersion": _version(version)}


def list_key_versions(call: Call) -> dict[str, Any]:
    versions = call.engine.list_key_versions(_key(call))
    return _page(call, versions, "KeyVersions", "KeyVersion", _version)


def describe_key_version(call: Call) -> dict[str, Any]:
    version_id = call.params.required("KeyVersionId")
    version = call.engine.describe_key_version(_key(call), version_id)
    call.note(version.key_id, version.key_version_id)
    return {"KeyVersion": _version(version)}


# -- aliases ------------------------------------------------------------------------------
# RAM (2019 guide): CreateAlias needs the alias and the key; UpdateAlias the alias, the key
# it points at now and the new key; DeleteAlias the alias and the key it points at.
def _alias_and_its_key(call: Call) -> str:
    alias_name = call.params.required("AliasName")
    call.allow_alias(alias_name)
    current = call.alias_target(alias_name)
    if current is not None:
        call.allow_key_id(current)
    return alias_name


def create_alias(call: Call) -> dict[str, Any]:
    alias_name = call.params.required("AliasName")
    call.allow_alias(alias_name)
    call.engine.create_alias(alias_name, _key(call))
    return {}


def update_alias(call: Call) -> dict[str, Any]:
    alias_name = _alias_and_its_key(call)
    call.engine.update_alias(alias_name, _key(call))
    return {}


def delete_alias(call: Call) -> dict[str, Any]:
    call.engine.delete_alias(_alias_and_its_key(call))
    return {}


def list_aliases(call: Call) -> dict[str, Any]:
    call.allow_container("alias")
    return _page(call, call.engine.list_aliases(), "Aliases", "Alias", _alias)


def list_aliases_by_key_id(call: Call) -> dict[str, Any]:
    aliases = call.engine.list_aliases_by_key_id(_key(call))
    return _page(call, aliases, "Aliases", "Alias", _alias)


# -- tags ---------------------------------------------------------------------------------
def tag_resource(call: Call) -> dict[str, Any]:
    unsupported(call, "CertificateId", "SecretName")
    tags = call.params.tags()
    call.engine.tag_resource(_key(call), tags)
    return {}


def untag_resource(call: Call) -> dict[str, Any]:
    unsupported(call, "CertificateId", "SecretName")
    tag_keys = call.params.tag_keys()
    call.engine.untag_resource(_key(call), tag_keys)
    return {}


def list_resource_tags(call: Call) -> dict[str, Any]:
    key = _key(call)
    meta = call.engine.describe_key(key)
    tags = call.engine.list_resource_tags(meta.key_id)
    call.note(meta.key_id)
    rows = [{"KeyId": meta.key_id, "TagKey": k, "TagValue": v} for k, v in sorted(tags.items())]
    return {"Tags": {"Tag": rows}}


def _action(handler: Callable[[Call], dict[str, Any]], required: str = "",
            optional: str = "") -> Action:  # fmt: skip
    required_names = frozenset(required.split())
    return Action(handler, required_names | frozenset(optional.split()), required_names)


PAGE = "PageNumber PageSize"
ACTIONS: dict[str, Action] = {
    "CreateKey": _action(create_key, "", "Description KeySpec KeyUsage Origin ProtectionLevel "
                         "EnableAutomaticRotation RotationInterval Tags DKMSInstanceId "
                         "KeyStorageMechanism Policy"),  # fmt: skip
    "DescribeKey": _action(describe_key, "KeyId"),
    "ListKeys": _action(list_keys, "", f"{PAGE} Filters"),
    "EnableKey": _action(_state_change("enable_key"), "KeyId"),
    "DisableKey": _action(_state_change("disable_key"), "KeyId"),
    "ScheduleKeyDeletion": _action(schedule_key_deletion, "KeyId PendingWindowInDays"),
    "CancelKeyDeletion": _action(_state_change("cancel_key_deletion"), "KeyId"),
    "UpdateRotationPolicy": _action(update_rotation_policy, "KeyId EnableAutomaticRotation",
                                    "RotationInterval"),  # fmt: skip
    "CreateKeyVersion": _action(create_key_version, "KeyId"),
    "ListKeyVersions": _action(list_key_versions, "KeyId", PAGE),
    "DescribeKeyVersion": _action(describe_key_version, "KeyId KeyVersionId"),
    "UpdateKeyDescription": _action(update_key_description, "KeyId Description"),
    "DeleteKeyMaterial": _action(delete_key_material, "KeyId"),
    "CreateAlias": _action(create_alias, "AliasName KeyId"),
    "UpdateAlias": _action(update_alias, "AliasName KeyId"),
    "DeleteAlias": _action(delete_alias, "AliasName"),
    "ListAliases": _action(list_aliases, "", PAGE),
    "ListAliasesByKeyId": _action(list_aliases_by_key_id, "KeyId", PAGE),
    "TagResource": _action(tag_resource, "KeyId Tags", "CertificateId SecretName"),
    "UntagResource": _action(untag_resource, "KeyId TagKeys", "CertificateId SecretName"),
    "ListResourceTags": _action(list_resource_tags, "KeyId"),
    **{name: _action(h, req, opt) for name, (h, req, opt) in _crypto.CRYPTO.items()},
}
