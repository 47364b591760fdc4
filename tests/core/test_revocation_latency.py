"""Revocation latency: a disabled key stops a long-lived worker within the configured time.

Decrypt side: the data-key cache's time-to-live (default 60 s). Encrypt side: the data key's
max age (default 300 s). Real local keystore, injected clocks: nothing sleeps.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from kmsbeam import (
    DataKeyCache,
    DataKeyPolicy,
    FieldDecryptor,
    FieldEncryptor,
    KeyDisabledError,
    shared_cache,
)
from kmsbeam.keys.cache import DEFAULT_KEY_CACHE_TTL
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.failures import FailureMemory
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.policy import DEFAULT_MAX_AGE, DataKeys
from kmsbeam.transforms import DecryptCells, DecryptFields, EncryptFields, EncryptRecords, RewrapDataKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def disable(source: Any) -> None:
    KmsEngine(KeyStore(source.home)).disable_key(source.key_id)


def test_defaults_are_minutes_not_hours() -> None:
    assert DEFAULT_KEY_CACHE_TTL == 60 and DataKeyCache().ttl_seconds == 60
    assert DEFAULT_MAX_AGE == 300 and DataKeyPolicy().max_age_seconds == 300
    assert shared_cache().ttl_seconds == 60 and shared_cache(15).ttl_seconds == 15
    assert shared_cache(15) is shared_cache(15.0) and shared_cache(15) is not shared_cache()


@pytest.mark.parametrize("ttl", [5.0, 60.0])
def test_a_disabled_key_stops_decryption_after_the_cache_ttl(source: Any, ttl: float) -> None:
    clock = Clock()
    cache = DataKeyCache(ttl_seconds=ttl, clock=clock)
    enc = FieldEncryptor(["ssn"], source)
    values = [enc.encrypt({"ssn": f"{i:09d}"}) for i in range(3)]  # one data key
    dec = FieldDecryptor(["ssn"], source, cache=cache)  # a long-lived worker's decryptor
    assert dec.decrypt(values[0]) == {"ssn": "000000000"}
    disable(source)
    clock.now += ttl - 0.001  # still inside the TTL: the unwrapped key is reused
    assert dec.decrypt(values[1]) == {"ssn": "000000001"}
    clock.now += 0.001  # the TTL is over: the next value asks the key source, which says no
    with pytest.raises(KeyDisabledError):
        dec.decrypt(values[2])


@pytest.mark.parametrize("age", [30.0, 300.0])
def test_a_disabled_key_stops_encryption_after_the_data_key_max_age(source: Any, age: float) -> None:
    clock = Clock()
    keys = DataKeys(source, FIELD_V1, policy=DataKeyPolicy(max_age_seconds=age), clock=clock,
                    failures=FailureMemory(clock=clock))  # fmt: skip
    first = keys.sealer()
    disable(source)
    clock.now += age - 0.001
    assert keys.sealer() is first  # the data key it holds still encrypts
    clock.now += 0.001
    with pytest.raises(KeyDisabledError):
        keys.sealer()


def test_every_transform_takes_the_two_settings() -> None:
    key = "local:alias/x"
    assert DecryptFields(key, ["a"], key_cache_ttl=7).display_data()["key_cache_ttl"] == 7.0
    assert EncryptFields(key, ["a"], data_key_max_age=9).display_data()["max_key_age_seconds"] == 9.0
    assert EncryptRecords(key, data_key_max_age=9).display_data()["max_key_age_seconds"] == 9.0
    policy = DataKeyPolicy(max_records=5, max_age_seconds=100)
    shown = EncryptFields(key, ["a"], policy=policy, data_key_max_age=9).display_data()
    assert shown["max_key_age_seconds"] == 9.0 and shown["max_records_per_key"] == 5
    DecryptCells(key, ["a"], key_cache_ttl=7)
    RewrapDataKeys(key, ["a"], key_cache_ttl=7)
    for bad in (0, -1, math.nan, math.inf, True):
        with pytest.raises(ValueError):
            DecryptFields(key, ["a"], key_cache_ttl=bad)
        with pytest.raises(ValueError):
            EncryptFields(key, ["a"], data_key_max_age=bad)
