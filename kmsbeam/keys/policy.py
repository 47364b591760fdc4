"""The data-key policy: when the encrypt side asks its key source for a new data key.

Default: one data key per (bundle, key URI, encryption context), generated lazily on the
first record that needs it, and replaced sooner when any cap is reached:

- ``max_records`` records sealed under it (default 1,000,000),
- ``max_bytes`` plaintext bytes sealed under it (default 1 GiB),
- ``max_age_seconds`` since it was generated (default ``DEFAULT_MAX_AGE`` = 5 minutes).

The age cap bounds the revocation latency on the encrypt side: after DisableKey a worker keeps
sealing records under the data key it holds until that key is replaced, at most
``max_age_seconds`` later (or at the bundle's end), and the next GenerateDataKey fails the job.
Five minutes costs at most one extra GenerateDataKey per DoFn instance and context every five
minutes (a dozen calls an hour per worker thread: nothing next to the records), and keeps a kill
switch in minutes, not the hour it used to be.

Caps are checked before each record, so a key may exceed ``max_bytes`` by one record. Hard
limits that no setting can lift: 2**32 values per key (the envelope's counter nonce) and 2**40
plaintext bytes per key (well inside AES-GCM's limits).

After GenerateDataKey fails, the failure is remembered per (key URI, context) in the worker
process for a short time (``kmsbeam.failures``: 10 s by default), so a broken key does not turn
into one failing KMS call per record or per bundle; each raise is a fresh, detail-free error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmsbeam.formats.envelope import MAX_VALUES_PER_KEY, V2_OF, Sealer
from kmsbeam.errors import KmsBeamError
from kmsbeam.failures import FailureMemory, shared_failures
from kmsbeam.keys.source import KeySource, canonical_context, check_context

if TYPE_CHECKING:  # kmsbeam.vault imports kmsbeam.formats
    from kmsbeam.vault import KeyVault

__all__ = ["DEFAULT_MAX_AGE", "DataKeyPolicy", "DataKeys"]

HARD_MAX_BYTES = 2**40
DEFAULT_MAX_AGE = 300.0


@dataclass(frozen=True)
class DataKeyPolicy:
    """Caps on how much one data key may protect. Picklable configuration."""

    max_records: int = 1_000_000
    max_bytes: int = 1 << 30
    max_age_seconds: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= MAX_VALUES_PER_KEY:
            raise ValueError(f"max_records must be between 1 and {MAX_VALUES_PER_KEY}")
        if not 1 <= self.max_bytes <= HARD_MAX_BYTES:
            raise ValueError(f"max_bytes must be between 1 and {HARD_MAX_BYTES}")
        age = self.max_age_seconds
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age <= 0:
            raise ValueError("max_age_seconds must be a positive, finite number of seconds")


class DataKeys:
    """Hands out the current ``Sealer`` for one key source and context, under a policy.

    One instance per worker thread (a DoFn instance); not thread-safe.

    Args:
        source: the key source to generate data keys from.
        fmt: the envelope format the sealers write (FIELD_V1 or RECORD_V1).
        context: the encryption context bound to every generated data key.
        policy: the caps.
        clock: monotonic seconds, injectable for tests.
        on_generate: called once after every successful GenerateDataKey (for metrics).
        failures: where failed GenerateDataKey calls are remembered (default: the process-wide
            ``shared_failures()``).
        vault: a key vault (``kmsbeam.vault.KeyVault``): each new data key's wrapped form is
            written to it (durably) before its sealer is handed out, and the sealers write
            ``fmt``'s v2 (key-vault) values, which name the key by K only.

    Attributes:
        calls: GenerateDataKey calls made (failed ones included); ``failed_calls`` of them failed.
    """

    def __init__(
        self,
        source: KeySource,
        fmt: int,
        context: Mapping[str, str] | None = None,
        policy: DataKeyPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_generate: Callable[[], None] | None = None,
        failures: FailureMemory | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        self._source = source
        self._vault = vault
        self._fmt = V2_OF[fmt] if vault is not None and fmt in V2_OF else fmt
        self._context = check_context(context)
        self._policy = policy or DataKeyPolicy()
        self._clock = clock
        self._on_generate = on_generate
        self._sealer: Sealer | None = None
        self._failures = failures if failures is not None else shared_failures()
        # the source object itself (one per key URI per process, ``open_key_source``): two
        # keystores or endpoints that share a URI are never confused
        self._failure_key = (source, canonical_context(self._context))
        self._records = 0
        self._born = 0.0
        self.bytes = 0
        self.generated = 0
        self.calls = 0
        self.failed_calls = 0

    def reset(self) -> None:
        """Forget the current data key (a bundle boundary)."""
        self._sealer = None

    def sealer(self, values: int = 1, records: int = 1) -> Sealer:
        """The sealer for the next ``records`` records, which will seal ``values`` values.

        Raises:
            KmsBeamError: the key source failed (now, or recently: a fresh error each time).
        """
        s = self._sealer
        p = self._policy
        if (
            s is None
            or self._records + records > p.max_records
            or self.bytes >= p.max_bytes
            or s.count + values > MAX_VALUES_PER_KEY
            or self._clock() - self._born >= p.max_age_seconds
        ):
            s = self._new_sealer()
        self._records += records
        return s

    def room(self, wanted: int) -> int:
        """How many of the next ``wanted`` records one data key can take under the records
        cap: the rest of the current key's allowance, or a whole new key's (at least 1)."""
        left = self._policy.max_records - self._records if self._sealer is not None else 0
        if left <= 0:
            left = self._policy.max_records
        return max(1, min(wanted, left))

    def _new_sealer(self) -> Sealer:
        self._sealer = None
        remembered = self._failures.recall(self._failure_key)
        if remembered is not None:
            raise remembered
        self.calls += 1
        failed: KmsBeamError | None = None
        try:
            key = self._source.generate_data_key(self._context)
        except KmsBeamError as exc:
            failed = self._failures.remember(self._failure_key, exc)
        if failed is not None:  # raised outside the handler: no chain to the original error
            self.failed_calls += 1
            raise failed
        sealer = Sealer(self._fmt, key.plaintext, key.wrapped)
        if self._vault is not None:  # durable before any value under the key exists
            self._vault.record(sealer.commitment, key.wrapped, self._source.uri,
                               key.key_version, self._context)  # fmt: skip
        del key
        self._sealer = sealer
        self._records = 0
        self.bytes = 0
        self._born = self._clock()
        self.generated += 1
        if self._on_generate is not None:
            self._on_generate()
        return sealer
