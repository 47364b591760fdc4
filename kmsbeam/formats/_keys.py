"""Where the engines get their data keys: ``Sealing`` (encrypt side: the data-key policy,
with every sealed plaintext byte counted) and ``Unwrapping`` (decrypt side: the data-key cache
for one key source and context). Every engine goes through these two, so none can skip
``max_bytes`` or set up its cache differently.
"""

from __future__ import annotations

import bisect
import operator
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from kmsbeam.errors import MalformedValueError, RecordError
from kmsbeam.formats.envelope import KeyCipher, Opener, Sealer, parse
from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.keys.policy import DataKeyPolicy, DataKeys
from kmsbeam.keys.source import KeySource, canonical_context, check_context

if TYPE_CHECKING:  # kmsbeam.vault imports kmsbeam.formats
    from kmsbeam.vault import KeyVault

__all__ = ["Sealing", "Unwrapping"]


class Sealing:
    """The current data key of one encrypt engine, replaced under a ``DataKeyPolicy``.

    ``sealer(values, records, size)`` is the only way to a ``Sealer``: it counts ``size``
    plaintext bytes against the key it returns, so ``max_bytes`` holds for every caller.
    ``span(sizes)`` tells a batch how many records one key may take, so a batch is cut where
    the records cap, or the bytes cap, would be crossed (like record-by-record encryption:
    a key may exceed ``max_bytes`` by one record). One per worker thread; not thread-safe.

    Attributes:
        keys: the ``DataKeys`` (its ``generated``, ``calls`` and ``bytes`` counters).
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
        vault: KeyVault | None = None,
    ) -> None:
        self.policy = policy or DataKeyPolicy()
        self.keys = DataKeys(source, fmt, context, self.policy, clock=clock, on_generate=on_generate,
                             vault=vault)  # fmt: skip

    def reset(self) -> None:
        """A bundle boundary (``DataKeys.reset``): the next record gets a fresh data key, or with
        ``across_bundles`` one kept on the shelf."""
        self.keys.reset()

    def sealer(self, values: int, records: int, size: int) -> Sealer:
        """The sealer for the next ``records`` records: ``values`` values of ``size``
        plaintext bytes in all (counted now, against the key returned)."""
        sealer = self.keys.sealer(values, records)
        self.keys.bytes += size
        return sealer

    def span(self, sizes: Sequence[int]) -> int:
        """How many of the next records (plaintext bytes ``sizes``) one data key takes: at
        least 1, within the records cap, and stopping after the record that reaches the
        bytes cap."""
        take = self.keys.room(len(sizes))
        cap = self.policy.max_bytes
        used = self.keys.bytes  # the key room() holds (0: none)
        if used >= cap:  # the next sealer() is a new key
            used = 0
        if used + sum(sizes[:take]) < cap:
            return take
        n = 0
        while n < take:
            used += sizes[n]
            n += 1
            if used >= cap:
                break
        return n

    def _fits(self, n: int, size: int) -> bool:
        """Whether the next ``n`` records, ``size`` plaintext bytes in all, are one run:
        ``span`` of them would take them all."""
        if self.keys.room(n) < n:
            return False
        used = self.keys.bytes  # the key room() holds (0: none)
        return (0 if used >= self.policy.max_bytes else used) + size < self.policy.max_bytes

    def runs(
        self,
        n: int,
        rows: Sequence[Sequence[int] | None],
        plains: Sequence[Sequence[bytes | memoryview]],
    ) -> Iterator[tuple[Sealer, int, int, list[tuple[int, int]]]]:
        """Cut ``n`` records into runs under one data key each. Column ``c`` holds the values
        ``plains[c]`` of the records ``rows[c]`` (sorted; None: of every record). Yields
        ``(sealer, first record, end record, per column (first, end) value index)``; a run
        of records without values needs no data key and is not yielded."""
        total = sum(sum(map(len, values)) for values in plains)
        if self._fits(n, total):  # the common case: one run, without per-record sizes
            count = sum(map(len, plains))
            if count:
                yield self.sealer(count, n, total), 0, n, [(0, len(v)) for v in plains]
            return
        sizes = [0] * n
        for these, values in zip(rows, plains):
            if these is None:
                sizes = list(map(operator.add, sizes, map(len, values)))
            else:
                for r, value in zip(these, values):
                    sizes[r] += len(value)
        start = 0
        while start < n:
            stop = start + self.span(sizes[start:])
            spans = [(start, stop) if these is None else
                     (bisect.bisect_left(these, start), bisect.bisect_left(these, stop))
                     for these in rows]  # fmt: skip
            count = sum(b - a for a, b in spans)
            if count:
                yield self.sealer(count, stop - start, sum(sizes[start:stop])), start, stop, spans
            start = stop


class Unwrapping:
    """Data keys for one decrypt engine: ``source``'s key, ``context``, through ``cache``
    (default: the process-wide one), with ``on_call`` for each call made to the source.

    With ``vault`` (``kmsbeam.vault.KeyVault``), key-vault values (v2) are read too: their
    data key is looked up in the vault by K (``KeyVault.resolve``), then unwrapped by
    ``source`` as a v1 header's key would be. Without one, a v2 value is that record's error.

    ``opener(value, fmt)`` remembers the openers of the last few data keys (values of one data
    key share their header), for as long as the cache would hold their keys, so most values are
    matched by header instead of being parsed and looked up again. Thread-safe when the cache is.
    """

    _MAX_OPENERS = 64

    def __init__(
        self,
        source: KeySource,
        context: Mapping[str, str] | None = None,
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        self.source = source
        self.vault = vault
        self.context = check_context(context)
        self.context_key = canonical_context(self.context)
        self.cache = cache if cache is not None else shared_cache()
        self.on_call = on_call
        self._last: tuple[Opener, float] | None = None  # (opener, expiry)
        self._openers: dict[bytes, tuple[Opener, float]] = {}

    def entry(self, wrapped: bytes) -> tuple[KeyCipher, float]:
        """The data key ``wrapped`` holds, unwrapped through the cache, and when the cache
        forgets it (``cache.now()`` time)."""
        return self.cache.entry(self.source, wrapped, self.context,
                                context_key=self.context_key, on_call=self.on_call)  # fmt: skip

    def opener(self, value: object, fmt: int) -> tuple[Opener, bytes]:
        """The opener of ``value``'s data key and ``value``'s body (``value`` binary or text).

        Raises:
            MalformedValueError: not a value of format ``fmt``. KmsBeamError: as ``entry``.
        """
        last = self._last
        now = self.cache.now()
        if last is not None and now < last[1]:
            body = last[0].body_of(value)
            if body is not None:
                return last[0], body
        if not isinstance(value, (str, bytes, bytearray, memoryview)):
            raise MalformedValueError()
        parsed = parse(value, fmt, vault=True)
        hit = self._openers.get(parsed.header)
        if hit is None or now >= hit[1]:
            if parsed.wrapped:
                cipher, expires = self.entry(parsed.wrapped)
            else:
                cipher, expires = self._from_vault(parsed.commitment)
            if len(self._openers) >= self._MAX_OPENERS:
                self._openers.clear()
            hit = self._openers[parsed.header] = (Opener(parsed.fmt, parsed.header, cipher), expires)
        self._last = hit
        return hit[0], parsed.body

    def _from_vault(self, key_id: bytes) -> tuple[KeyCipher, float]:
        if self.vault is None:
            raise RecordError(
                "key-vault value: its data key is in a key vault, and none was given "
                "(--key-vault, or the dataset manifest's key_vault)"
            )
        return self.vault.resolve(key_id, self.entry)
