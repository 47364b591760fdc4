"""Envelope formats: the value envelope and codec, field and record encryption, streamed
objects (``kmsbeam.formats.objects``) and Parquet cells and PME (``kmsbeam.formats.parquet``).
Every format is specified in ``docs/FORMAT.md`` and pinned by ``tests/vectors``.
"""
