"""Strict decryption (``kmsbeam.keys.strict``): other master keys are refused before any call."""

from __future__ import annotations

from typing import Any

import pytest

from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, RecordDecryptor, RecordEncryptor, failure_reason, open_key_source
from kmsbeam.keys.source import KeySource
from kmsbeam.keys.strict import KeyNotAllowedError, KeyRequirement, KeyUse, RequiredRewrapSource, qualify_key


def _encrypted(uri: str, n: int = 3) -> list[dict[str, Any]]:
    enc = FieldEncryptor(["ssn"], open_key_source(uri, create=True))
    return [enc.encrypt({"id": i, "ssn": f"{i:03d}-45-6789"}) for i in range(n)]


def test_values_under_another_master_key_are_refused_before_any_call(kms_home: Any) -> None:
    mine, theirs = _encrypted("local:alias/pii"), _encrypted("local:alias/other")
    calls: list[int] = []
    use = KeyRequirement(["local:alias/pii"]).checked(DataKeyCache())
    # a local: source unwraps any key of the keystore: only the requirement tells them apart
    dec = FieldDecryptor(["ssn"], open_key_source("local:alias/pii"), cache=use, on_call=lambda: calls.append(1))
    assert [dec.decrypt(r)["ssn"] for r in mine] == [f"{i:03d}-45-6789" for i in range(3)]
    assert len(calls) == 1
    out = dec.decrypt_batch(theirs)
    assert all(isinstance(e, KeyNotAllowedError) for e in out)
    assert len(calls) == 1  # no call for a refused value
    assert failure_reason(out[0]).startswith("key not allowed")
    assert use.used == frozenset(open_key_source("local:alias/pii").key_versions())
    # without a requirement the other key's values decrypt, and the versions used say so
    free = KeyUse(DataKeyCache())
    dec = FieldDecryptor(["ssn"], open_key_source("local:alias/pii"), cache=free)
    assert dec.decrypt(theirs[0])["ssn"] == "000-45-6789"
    assert free.used == frozenset(open_key_source("local:alias/other").key_versions())


def test_records_and_a_cached_key_are_checked_too(kms_home: Any) -> None:
    other = open_key_source("local:alias/rec-other", create=True)
    value = RecordEncryptor(other).encrypt({"id": 1, "ssn": "x"})
    shared = DataKeyCache()
    assert RecordDecryptor(other, cache=shared).decrypt(value)["ssn"] == "x"  # now cached
    open_key_source("local:alias/rec-pii", create=True)
    strict = RecordDecryptor(other, cache=KeyRequirement(["local:alias/rec-pii"]).checked(shared))
    with pytest.raises(KeyNotAllowedError):
        strict.decrypt(value)


def test_bare_key_ids_live_in_the_jobs_key_source() -> None:
    assert qualify_key("alias/b", "kms-emulator://127.0.0.1:9800/alias/a") == "kms-emulator://127.0.0.1:9800/alias/b"
    assert qualify_key("key-1", "local:alias/a") == "local:key-1"
    assert qualify_key("local:alias/c", "kms-emulator://127.0.0.1:9800/alias/a") == "local:alias/c"
    got = qualify_key("kek-2", "pkcs11:token=etl;object=kek-1?module-path=/m.so&pin-source=env:P")
    assert got.startswith("pkcs11:token=etl;object=kek-2?") and "m.so" in got
    with pytest.raises(Exception):
        KeyRequirement([])


def test_a_strict_rotation_target_checks_the_old_key_and_passes_only_declared_members(kms_home: Any) -> None:
    target = open_key_source("local:alias/strict-to", create=True)
    open_key_source("local:alias/strict-ok", create=True)
    allowed = open_key_source("local:alias/strict-ok").generate_data_key().wrapped
    other = open_key_source("local:alias/strict-no", create=True).generate_data_key().wrapped
    strict = RequiredRewrapSource(target, KeyRequirement(["local:alias/strict-ok"]))
    assert isinstance(strict, KeySource)
    assert strict.wrapped_key_version(strict.rewrap(allowed)) == strict.current_version() == target.current_version()
    with pytest.raises(KeyNotAllowedError):
        strict.rewrap(other)
    assert strict.key_versions() == target.key_versions() and strict.created == target.created
    assert not hasattr(strict, "home")  # no pass-through of what KeySource does not declare
