"""The peers table: one ``PeerRow`` per path measured, the row names in order, the text form.

Every row is the best of the same number of runs (``--repeat``) and prints the load average
sampled while it ran (min/mean/max), so each ratio compares equal repeats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PEER_ROWS", "REFERENCE", "CountingSource", "PeerRow", "format_peers", "peers_as_json"]


@dataclass(frozen=True)
class PeerRow:
    """One path: its rate, the KMS calls it made and the bytes it adds per value.

    ``values`` is how many values were measured (a time-boxed peer may stop early);
    ``kms_calls`` how many KMS (or key-provider) calls were counted while doing them;
    ``calls_per_million`` the calls per 1,000,000 values the notes justify (measured and
    scaled, or the cache cap applied); ``None`` where the column does not apply.
    """

    name: str
    values_per_s: float
    values: int
    kms_calls: int | None
    calls_per_million: float | None
    overhead: float | None
    notes: str = ""
    load: str = "-"  # min/mean/max 1-minute load average during the measurement


# The table, in order. The smoke test pins this list.
PEER_ROWS = (
    "kmsbeam encrypt_batch, bytes",
    "kmsbeam encrypt_batch, text",
    "kmsbeam encrypt (one record per call), bytes",
    "kmsbeam encrypt (one record per call), text",
    "kmsbeam decrypt_batch, bytes",
    "AWS ESDK, caching CMM, unsigned suite",
    "AWS ESDK, caching CMM, default suite",
    "Tink AEAD AES256_GCM, local keyset",
    "naive: GenerateDataKey per record",
    "Parquet plain write",
    "Parquet PME write (pyarrow)",
    "Parquet kmsbeam cells + write",
)
REFERENCE = PEER_ROWS[0]  # ratio 1.00


class CountingSource:
    """A kmsbeam ``KeySource`` that counts the calls it forwards (the KMS calls a path makes)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.generate = 0
        self.decrypt = 0

    def generate_data_key(self, context: Mapping[str, str] | None = None) -> Any:
        self.generate += 1
        return self._inner.generate_data_key(context)

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        self.decrypt += 1
        return bytes(self._inner.decrypt_data_key(wrapped, context))

    def __getattr__(self, name: str) -> Any:  # uri, kind, rewrap, describe_key
        return getattr(self._inner, name)


def _num(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if float(v).is_integer():
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def format_peers(rows: Sequence[PeerRow]) -> str:
    """The rows as an aligned text table; ratios are against ``REFERENCE``."""
    ref = next((r.values_per_s for r in rows if r.name == REFERENCE), float("nan"))
    head = ("path", "values/s", "ratio", "KMS calls/1M values", "overhead B/value", "load during", "notes")
    cells = [head]
    for r in rows:
        ratio = r.values_per_s / ref if ref == ref and ref > 0 else float("nan")
        cells.append((r.name, _num(round(r.values_per_s)), f"{ratio:.2f}" if ratio == ratio else "-",
                      _num(r.calls_per_million), _num(r.overhead, 1), r.load, r.notes))  # fmt: skip
    w = [max(len(c[i]) for c in cells) for i in range(6)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}  {e:>{w[4]}}  {f:>{w[5]}}  {g}".rstrip()
             for a, b, c, d, e, f, g in cells]  # fmt: skip
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def peers_as_json(rows: Sequence[PeerRow]) -> list[dict[str, Any]]:
    ref = next((r.values_per_s for r in rows if r.name == REFERENCE), 0.0)
    return [{**asdict(r), "ratio": r.values_per_s / ref if ref else None} for r in rows]
