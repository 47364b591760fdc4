"""``kmsbeam rotate --verify`` / ``--verify-sample F``: decrypt a rotated dataset (or an evenly
spread sample of its records) with the normal decrypt job, into a scratch directory that is
deleted afterwards. Nothing decrypted is kept or printed: only counts are reported.

The scratch directory is ``OUTPUT/_kmsbeam_verify/`` on OUTPUT's own filesystem (Beam's
FileSystems, so ``oss://`` too): workers on other machines cannot see a launcher's temp dir."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.pipelines import jobs, paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.plan import JobSpec, plan_decrypt
from kmsbeam.pipelines.rotate.rotator import Verified
from kmsbeam.pipelines.rotate.state import sample_indices

__all__ = ["SCRATCH_NAME", "verify_dataset"]

SCRATCH_NAME = "_kmsbeam_verify"


def verify_dataset(out_dir: str, m: Manifest, beam_args: list[str], fraction: float | None,
                   trusted: TrustedKeySources | None = None) -> Verified:  # fmt: skip
    """Decrypt all of ``out_dir`` (``fraction`` None) or a sample of its records; the output's
    key URIs resolve against ``trusted`` (the rotation's own key sources). The report is
    ``{"records_sampled", "records_decrypted", "dead_letters", "sample_fraction"}``.
    """
    found = _decrypt(out_dir, m, beam_args, fraction, trusted)
    row = (f"{found['records_decrypted']:,} of {found['records_sampled']:,} records sampled, "
           f"{found['dead_letters']:,} failed")  # fmt: skip
    return Verified(found, [("verified (decrypted)", row)], found["dead_letters"])


def _decrypt(out_dir: str, m: Manifest, beam_args: list[str], fraction: float | None,
             trusted: TrustedKeySources | None) -> dict[str, Any]:  # fmt: skip
    out_dir = str(out_dir)
    scratch = paths.join(out_dir, SCRATCH_NAME)
    paths.delete_tree(scratch)
    try:
        source, sampled = out_dir, None
        if fraction is not None:
            source = paths.join(scratch, "sample")
            sampled = _write_sample(out_dir, source, m.format, fraction)
            paths.write_bytes(paths.join(source, MANIFEST_NAME),
                                  paths.read_bytes(paths.join(out_dir, MANIFEST_NAME)))  # fmt: skip
        spec = JobSpec("decrypt", source, paths.join(scratch, "plain"), beam_args=beam_args,
                       trusted=trusted)  # fmt: skip
        result = jobs.run_plan(plan_decrypt(spec))
        return {"records_sampled": result.records_in if sampled is None else sampled,
                "records_decrypted": result.records_out, "dead_letters": result.dead_letters,
                "sample_fraction": 1.0 if fraction is None else fraction}  # fmt: skip
    finally:
        paths.delete_tree(scratch)


def _write_sample(src: str, dst: str, fmt: str, fraction: float) -> int:
    """Copy an evenly spread ``fraction`` of the records of ``src``'s part files into one part
    file in ``dst``; returns how many."""
    files = paths.list_files(src, "part-*")
    if fmt == "parquet":
        tables = [pq.read_table(io.BytesIO(paths.read_bytes(f))) for f in files]
        table = pa.concat_tables(tables) if tables else None
        if table is None or table.num_rows == 0:
            return 0
        picked = table.take(sample_indices(table.num_rows, fraction))
        sink = io.BytesIO()
        pq.write_table(picked, sink)
        paths.write_bytes(paths.join(dst, "part-00000-of-00001.parquet"), sink.getvalue())
        return picked.num_rows
    if fmt == "csv":
        header: list[str] | None = None
        rows: list[list[str]] = []
        for f in files:
            reader = csv.reader(io.StringIO(paths.read_text(f), newline=""))
            header = next(reader, header)
            rows.extend(reader)
        keep = [rows[i] for i in sample_indices(len(rows), fraction)]
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        if header is not None:
            writer.writerow(header)
        writer.writerows(keep)
        paths.write_text(paths.join(dst, "part-00000-of-00001.csv"), text.getvalue())
        return len(keep)
    lines = [line for f in files for line in paths.read_text(f).splitlines() if line.strip()]
    keep_lines = [lines[i] for i in sample_indices(len(lines), fraction)]
    paths.write_text(paths.join(dst, "part-00000-of-00001.jsonl"), "".join(x + "\n" for x in keep_lines))
    return len(keep_lines)
