"""The data-key policy: when the encrypt side asks its key source for a new data key.

Default: one data key per (bundle, key URI, encryption context), generated lazily on the
first record that needs it, and replaced sooner when any cap is reached:

- ``max_records`` records sealed under it (default 1,000,000),
- ``max_bytes`` plaintext bytes sealed under it (default 1 GiB),
- ``max_age_seconds`` since it was generated (default ``DEFAULT_MAX_AGE`` = 5 minutes).

``across_bundles``: whether a data key outlives its bundle (``kmsbeam.keys.shelf``): ``True``
keeps it for the next bundles of the worker process until a cap is reached (streaming: tiny
bundles would otherwise cost a data key each); ``False`` gives every bundle its own; ``None``
(the default) lets the Beam transforms decide: across bundles when the pipeline is streaming
(``--streaming``) or its input is unbounded, one per bundle in batch, where bundles are large
and a key per bundle costs nothing. An engine used without Beam reads ``None`` as ``False``.

The age cap bounds the revocation latency on the encrypt side: after DisableKey a worker keeps
sealing records under the data key it holds until that key is replaced, at most
``max_age_seconds`` later (or at the bundle's end, one data key per bundle), and the next
GenerateDataKey fails the job. Five minutes costs at most one extra GenerateDataKey per worker
thread, key and context every five minutes (a dozen calls an hour: nothing next to the
records), and keeps a kill switch in minutes, not the hour it used to be.

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

from kmsbeam import process
from kmsbeam.formats.envelope import MAX_VALUES_PER_KEY, V2_OF, Sealer
from kmsbeam.errors import KmsBeamError
from kmsbeam.failures import FailureMemory, shared_failures
from kmsbeam.keys.calls import count_call
from kmsbeam.keys.shelf import KeyShelf, Lease, key_shelf
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
    across_bundles: bool | None = None

    def __post_init__(self) -> None:
        if not (self.across_bundles is None or isinstance(self.across_bundles, bool)):
            raise ValueError("across_bundles is True, False or None (the transforms decide)")
        if not 1 <= self.max_records <= MAX_VALUES_PER_KEY:
            raise ValueError(f"max_records must be between 1 and {MAX_VALUES_PER_KEY}")
        if not 1 <= self.max_bytes <= HARD_MAX_BYTES:
            raise ValueError(f"max_bytes must be between 1 and {HARD_MAX_BYTES}")
        age = self.max_age_seconds
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age <= 0:
            raise ValueError("max_age_seconds must be a positive, finite number of seconds")


class _Held:
    """The lease one ``DataKeys`` holds in this process (a forked child holds none)."""

    __slots__ = ("lease",)

    def __init__(self) -> None:
        self.lease: Lease | None = None


class DataKeys:
    """Hands out the current ``Sealer`` for one key source and context, under a policy.

    One instance per worker thread (a DoFn instance); not thread-safe. With
    ``policy.across_bundles``, ``reset()`` puts the data key on this process's shelf
    (``kmsbeam.keys.shelf``) and the next ``sealer()`` takes one from it, so data keys outlive
    bundles within the policy's caps; the shelf's leases are exclusive, which keeps every
    (data key, counter) pair unique across threads, bundles and retries.

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
        shelf: where data keys wait between bundles (default: this process's ``key_shelf()``,
            looked up at every use, so a forked child uses its own; a shelf given here is used
            as it is, in every process: tests).

    Attributes:
        calls: GenerateDataKey calls made (failed ones included); ``failed_calls`` of them failed.
        generated: data keys generated; ``reused``: data keys taken from the shelf.
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
        shelf: KeyShelf | None = None,
    ) -> None:
        self._source = source
        self._vault = vault
        self._fmt = V2_OF[fmt] if vault is not None and fmt in V2_OF else fmt
        self._context = check_context(context)
        self._policy = policy or DataKeyPolicy()
        self._clock = clock
        self._on_generate = on_generate
        self._failures = failures if failures is not None else shared_failures()
        context_key = canonical_context(self._context)
        # the source object itself (one per key URI per process, ``open_key_source``): two
        # keystores or endpoints that share a URI are never confused
        self._failure_key = (source, context_key)
        self._across = bool(self._policy.across_bundles)
        self._given_shelf = shelf  # None: this process's, looked up at each use (fork safety)
        self._shelf_key = (source, context_key, self._fmt, None if vault is None else vault.uri)
        self._held = process.Slot(_Held)  # a forked child starts without a lease
        self.generated = 0
        self.reused = 0
        self.calls = 0
        self.failed_calls = 0

    def _shelf(self) -> KeyShelf:
        return key_shelf() if self._given_shelf is None else self._given_shelf

    @property
    def bytes(self) -> int:
        """Plaintext bytes sealed under the current data key (0 without one)."""
        lease = self._held.get().lease
        return 0 if lease is None else lease.bytes

    @bytes.setter
    def bytes(self, value: int) -> None:
        lease = self._held.get().lease
        if lease is not None:
            lease.bytes = value

    def reset(self) -> None:
        """A bundle boundary: forget the current data key, or (``across_bundles``) put it on
        the shelf for the next bundle of any DoFn of this process."""
        held = self._held.get()
        lease, held.lease = held.lease, None
        if lease is not None and self._across and self._usable(lease, 1, 1):  # room for one more
            self._shelf().give(self._shelf_key, lease)

    def _usable(self, lease: Lease, values: int, records: int) -> bool:
        """Whether ``lease`` may take ``records`` more records of ``values`` values."""
        p = self._policy
        return (
            lease.records + records <= p.max_records
            and lease.bytes < p.max_bytes
            and lease.sealer.count + values <= MAX_VALUES_PER_KEY
            and self._clock() - lease.born < p.max_age_seconds
        )

    def sealer(self, values: int = 1, records: int = 1) -> Sealer:
        """The sealer for the next ``records`` records, which will seal ``values`` values.

        Raises:
            KmsBeamError: the key source failed (now, or recently: a fresh error each time).
        """
        held = self._held.get()
        lease = held.lease
        if lease is None or not self._usable(lease, values, records):
            lease = self._from_shelf(held, values, records) or self._new_lease(held)
        lease.records += records
        return lease.sealer

    def room(self, wanted: int) -> int:
        """How many of the next ``wanted`` records one data key can take under the records
        cap: the rest of the current key's allowance (with ``across_bundles``, a key waiting on
        the shelf is taken now), or a whole new key's (at least 1)."""
        held = self._held.get()
        lease = held.lease
        if lease is None and self._across:
            lease = self._from_shelf(held, 1, 1)
        left = self._policy.max_records - lease.records if lease is not None else 0
        if left <= 0:
            left = self._policy.max_records
        return max(1, min(wanted, left))

    def _from_shelf(self, held: _Held, values: int, records: int) -> Lease | None:
        """An idle data key of this process that may take the records (spent ones are
        dropped); None when there is none."""
        held.lease = None
        if not self._across:
            return None
        shelf = self._shelf()
        while (lease := shelf.take(self._shelf_key)) is not None:
            if self._usable(lease, values, records):
                held.lease = lease
                self.reused += 1
                count_call("data_keys_reused")
                return lease
        return None

    def _new_lease(self, held: _Held) -> Lease:
        held.lease = None
        remembered = self._failures.recall(self._failure_key)
        if remembered is not None:
            raise remembered
        self.calls += 1
        count_call("kms_calls_generate_data_key")
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
        lease = held.lease = Lease(sealer, self._clock(), self._shelf().epoch if self._across else 0)
        self.generated += 1
        count_call("data_keys_generated")
        if self._on_generate is not None:
            self._on_generate()
        return lease
