"""Fixtures for the KMS engine tests: a real keystore in tmp and a clock tests can move."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmsbeam.kms import KeyStore, KmsEngine

T0 = 1795435200.0  # 2026-11-23T12:00:00Z
DAY = 86400


class Clock:
    """An injectable ``time.time``: tests advance it instead of sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def engine(tmp_path: Path, clock: Clock) -> KmsEngine:
    return KmsEngine(KeyStore(tmp_path / "ks"), clock=clock)
