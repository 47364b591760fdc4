"""The Parquet rows of the peers table: plain write, pyarrow PME, kmsbeam cell columns.

One generated table (``benchmarks.parquet.make_table``: ``id``, ``name``, ``amount`` and the
16-byte strings ``ssn``, ``email``, ``card``, which are the protected columns), snappy, one
file per write, best of ``repeat`` with the three writes interleaved so machine drift hits all
(the GC stays on here, as in a job).
"values" are the protected cells (rows x 3), also for the plain write, so the rates compare.

- PME: pyarrow's Parquet Modular Encryption (``kmsbeam.formats.parquet.PmeEncryption`` supplies the
  ``KmsClient``: one master key for the three columns and the plaintext footer, double
  wrapping). Key-source calls from ``kmsbeam.formats.parquet.kms_call_totals`` for the first file
  after the KEK caches are cleared (later files in the process reuse the KEK: 0 calls).
- cells: ``CellEncryptor.encrypt_table`` then a write with DELTA_BYTE_ARRAY on the cell
  columns (as ``kmsbeam encrypt --parquet-mode cells`` writes them); calls counted on the key
  source. The time includes both steps.
- overhead per value: (file bytes - plain file bytes) / values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._measure import interleaved
from benchmarks._peers_table import PEER_ROWS, CountingSource, PeerRow

__all__ = ["PII", "parquet_rows"]

PII = ("ssn", "email", "card")


def parquet_rows(key: str, table: pa.Table, work: Path, repeat: int, say: Callable[[str], None]) -> list[PeerRow]:
    from kmsbeam import open_key_source
    from kmsbeam.formats.parquet import CellEncryptor, PmeEncryption, crypto_factory, kms_call_totals

    n: int = table.num_rows
    values = n * len(PII)
    plain_path, pme_path, cells_path = work / "plain.parquet", work / "pme.parquet", work / "cells.parquet"
    pme = PmeEncryption(key, dict.fromkeys(PII, key), plaintext_footer=True)
    source = CountingSource(open_key_source(key))
    cells = CellEncryptor(list(PII), source)
    delta = dict.fromkeys(PII, "DELTA_BYTE_ARRAY")
    others = [c for c in table.column_names if c not in PII]

    def write_plain() -> None:
        pq.write_table(table, plain_path, compression="snappy")

    def write_pme() -> None:
        props = pme.properties(table.schema)
        pq.write_table(table, pme_path, compression="snappy", encryption_properties=props)

    def write_cells() -> None:
        cells.reset()  # a new bundle: a new data key, as each EncryptCells bundle has
        encrypted = cells.encrypt_table(table)
        pq.write_table(encrypted, cells_path, compression="snappy", use_dictionary=others,
                       column_encoding=delta)  # fmt: skip

    crypto_factory().remove_cache_entries_for_all_tokens()
    before = kms_call_totals()
    source.generate = 0
    t = interleaved(repeat, {"plain": write_plain, "pme": write_pme, "cells": write_cells})
    after = kms_call_totals()
    pme_calls = (after.generate - before.generate) + (after.decrypt - before.decrypt)  # the first file's
    cell_calls = source.generate // repeat  # one data key per file (each write is a new bundle)
    best = {name: timing.best for name, timing in t.items()}
    sizes: dict[str, int] = {"plain": plain_path.stat().st_size, "pme": pme_path.stat().st_size, "cells": cells_path.stat().st_size}
    back = pq.ParquetFile(cells_path).read()
    if back.num_rows != n:
        raise RuntimeError(f"the cells file holds {back.num_rows} rows, not {n}")
    say(f"parquet: plain {best['plain']:.2f} s, PME {best['pme']:.2f} s, cells {best['cells']:.2f} s")

    def over(name: str) -> float:
        return (sizes[name] - sizes["plain"]) / values

    common = f"{n:,} rows x 3 columns, snappy, best of {repeat}"
    return [
        PeerRow(PEER_ROWS[9], values / best["plain"], values, None, None, 0.0,
                f"{common}; no encryption (baseline), {sizes['plain']:,} B file", t["plain"].load.text()),
        PeerRow(PEER_ROWS[10], values / best["pme"], values, pme_calls, pme_calls * 1e6 / values, over("pme"),
                f"{common}; 1 master key, plaintext footer, double wrapping; {pme_calls} key-source "
                f"call(s) for the first file (counted), 0 for later files in the process; {sizes['pme']:,} B file",
                t["pme"].load.text()),
        PeerRow(PEER_ROWS[11], values / best["cells"], values, cell_calls, cell_calls * 1e6 / values, over("cells"),
                f"{common}; CellEncryptor + write (DELTA_BYTE_ARRAY); {cell_calls} GenerateDataKey "
                f"per file (counted); {sizes['cells']:,} B file", t["cells"].load.text()),
    ]  # fmt: skip

