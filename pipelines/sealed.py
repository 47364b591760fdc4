"""Sealed dead letters: the failed record as a record v1 value under the job's key.

A dead letter of an encrypt-side job would otherwise hold its record in cleartext next to the
output. Sealed, each line is::

    {"kmsbeam_dead_letter": 1, "transform": "EncryptFields", "reason": "missing field: ssn",
     "sealed": "<record v1 value, text form>"}

The reason and the transform stay in clear (and are bound into the value's AAD as record v1
kept fields); the record is its kmsbeam JSON line (``_fns.dumps``: bytes as base64, dates as ISO
text) in the payload field ``sealed``. The encryption context is the job's plus
``SEAL_PURPOSE`` (so a sealed letter is never mistaken for data). Sealing needs
``GenerateDataKey`` on the job's key; a key-source failure while sealing fails the job (a dead
letter is never written in cleartext instead). ``unseal`` undoes it with ``Decrypt``.

Decrypt-side jobs seal only the dead letters that hold decrypted values (a decrypted record that
did not fit the output format); the others hold the ciphertext input as it was read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from kmsbeam.pipelines import _fns

from kmsbeam import DataKeyPolicy, KmsBeamError, RecordDecryptor, RecordEncryptor, open_key_source
from kmsbeam.reasons import job_error

__all__ = ["PAYLOAD", "SEAL_PURPOSE", "SealDeadLetters", "is_sealed", "seal_context", "unseal"]

PAYLOAD = "sealed"
KEPT = ("transform", "reason")
SEAL_PURPOSE = {"kmsbeam_purpose": "dead-letter"}


def seal_context(context: Mapping[str, str]) -> dict[str, str]:
    """The context a job's dead letters are sealed under."""
    return {**dict(context), **SEAL_PURPOSE}


def is_sealed(letter: Any) -> bool:
    return isinstance(letter, dict) and letter.get("kmsbeam_dead_letter") == 1 and PAYLOAD in letter


class SealDeadLetters(beam.DoFn):
    """``{"transform", "reason", "record"}`` -> the sealed dead letter (see the module)."""

    def __init__(self, key_uri: str, context: Mapping[str, str], across_bundles: bool = False) -> None:
        self._key = key_uri
        self._context = seal_context(context)
        self._across = across_bundles
        self._engine: Any = None

    def setup(self) -> None:
        self._generated = Metrics.counter("kmsbeam", "kms_calls_generate_data_key")
        self._sealed = Metrics.counter(_fns.NAMESPACE, "dead_letters_sealed")

    def start_bundle(self) -> None:
        if self._engine is not None:  # a data key lives for one bundle (or, across_bundles, goes
            self._engine.reset()  # back on the worker's shelf: kmsbeam.keys.shelf)

    def finish_bundle(self) -> None:
        if self._engine is not None:
            self._engine.reset()

    def _open(self) -> Any:
        failed: KmsBeamError | None = None
        try:
            return RecordEncryptor(open_key_source(self._key), keep=KEPT, payload_field=PAYLOAD,
                                   context=self._context, on_generate=self._generated.inc,
                                   policy=DataKeyPolicy(across_bundles=self._across))  # fmt: skip
        except KmsBeamError as exc:
            failed = job_error("SealDeadLetters", exc)
        raise failed

    def process(self, letter: Any) -> Iterator[dict[str, Any]]:
        if self._engine is None:
            self._engine = self._open()
        row = {"transform": str(letter.get("transform", "")), "reason": str(letter.get("reason", "")),
               "record": _fns.dumps(letter.get("record"))}  # fmt: skip
        failed: KmsBeamError | None = None
        try:
            out = self._engine.encrypt(row)
        except KmsBeamError as exc:  # no data key: the job fails, nothing is written in clear
            failed = job_error("SealDeadLetters", exc)
        if failed is not None:
            raise failed
        self._sealed.inc()
        yield {"kmsbeam_dead_letter": 1, "transform": row["transform"], "reason": row["reason"],
               PAYLOAD: out[PAYLOAD]}  # fmt: skip


def seal(letters: Any, key_uri: str, context: Mapping[str, str], label: str = "SealDeadLetters",
         across_bundles: bool = False) -> Any:  # fmt: skip
    """Seal a PCollection (or a list of them) of dead letters (``across_bundles``: their data key
    kept for the worker's next bundles, ``DataKeyPolicy``)."""
    if isinstance(letters, (list, tuple)):
        letters = tuple(letters) | f"{label}Flatten" >> beam.Flatten()
    return letters | label >> beam.ParDo(SealDeadLetters(key_uri, context, across_bundles))


def unseal(letters: list[dict[str, Any]], key_uri: str, context: Mapping[str, str]) -> list[dict[str, Any]]:
    """Sealed dead letters back to ``{"transform", "reason", "record"}`` (others unchanged).

    Raises:
        AuthenticationError: a sealed letter was changed, or another key or context is given.
    """
    engine = RecordDecryptor(open_key_source(key_uri), keep=KEPT, payload_field=PAYLOAD,
                             context=seal_context(context))  # fmt: skip
    out = []
    for letter in letters:
        if not is_sealed(letter):
            out.append(letter)
            continue
        opened = engine.decrypt({k: letter[k] for k in (*KEPT, PAYLOAD)})
        out.append({"transform": opened["transform"], "reason": opened["reason"],
                    "record": json.loads(opened["record"])})  # fmt: skip
    return out
