"""``kmsbeam rotate --verify`` / ``--verify-sample F``: decrypt a rotated dataset (or an evenly
spread sample of its records) with the normal decrypt job, into a scratch directory that is
deleted afterwards. Nothing decrypted is kept or printed: only counts are reported."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kmsbeam.pipelines import jobs
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.plan import JobSpec, plan_decrypt
from kmsbeam.pipelines.rotate_state import sample_indices

from kmsbeam.trust import TrustedKeySources


__all__ = ["verify_output"]


def verify_output(out_dir: Path, m: Manifest, beam_args: list[str], fraction: float | None,
                  trusted: TrustedKeySources | None = None) -> dict[str, Any]:  # fmt: skip
    """Decrypt all of ``out_dir`` (``fraction`` None) or a sample of its records; the output's
    key URIs resolve against ``trusted`` (the rotation's own key sources).

    Returns ``{"records_sampled", "records_decrypted", "dead_letters", "sample_fraction"}``.
    """
    scratch = Path(tempfile.mkdtemp(prefix="kmsbeam-verify-"))
    try:
        source, sampled = out_dir, None
        if fraction is not None:
            source = scratch / "sample"
            sampled = _write_sample(out_dir, source, m.format, fraction)
            shutil.copy(out_dir / MANIFEST_NAME, source / MANIFEST_NAME)
        spec = JobSpec("decrypt", str(source), str(scratch / "plain"), beam_args=beam_args,
                       trusted=trusted)  # fmt: skip
        result = jobs.run_plan(plan_decrypt(spec))
        return {"records_sampled": result.records_in if sampled is None else sampled,
                "records_decrypted": result.records_out, "dead_letters": result.dead_letters,
                "sample_fraction": 1.0 if fraction is None else fraction}  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_sample(src: Path, dst: Path, fmt: str, fraction: float) -> int:
    """Copy an evenly spread ``fraction`` of the records of ``src``'s part files into one part
    file in ``dst``; returns how many."""
    dst.mkdir(parents=True)
    files = sorted(p for p in src.glob("part-*") if p.is_file())
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(f) for f in files]
        table = pa.concat_tables(tables) if tables else None
        if table is None or table.num_rows == 0:
            return 0
        picked = table.take(sample_indices(table.num_rows, fraction))
        pq.write_table(picked, dst / "part-00000-of-00001.parquet")
        return picked.num_rows
    if fmt == "csv":
        header: list[str] | None = None
        rows: list[list[str]] = []
        for f in files:
            with open(f, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, header)
                rows.extend(reader)
        keep = [rows[i] for i in sample_indices(len(rows), fraction)]
        with open(dst / "part-00000-of-00001.csv", "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            if header is not None:
                writer.writerow(header)
            writer.writerows(keep)
        return len(keep)
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep_lines = [lines[i] for i in sample_indices(len(lines), fraction)]
    (dst / "part-00000-of-00001.jsonl").write_text("".join(x + "\n" for x in keep_lines), encoding="utf-8")
    return len(keep_lines)
