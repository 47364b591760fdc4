"""Beam round trips with a pkcs11: key on the FnApiRunner, in_memory and multi_processing.

Until ``kmsbeam.open_key_source`` dispatches ``pkcs11:`` URIs, the pipelines use the small
DoFns below (the same core ``FieldEncryptor``/``FieldDecryptor`` the public transforms use,
with the source from ``open_pkcs11_source``); once it does, the public ``EncryptFields`` and
``DecryptFields``. Counters are the transforms' names in the ``kmsbeam`` namespace.
"""

from __future__ import annotations

import sys
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import ConfigurationError, FieldDecryptor, FieldEncryptor, open_key_source, parse_key_uri
from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.pkcs11 import hsm_call_counts, open_pkcs11_source

# multi_processing workers unpickle these DoFns without importing this test module (Beam
# pickles with its own vendored cloudpickle)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FIELDS = ["ssn", "contact.email"]
CONTEXT = {"dataset": "customers"}
MODES = {
    "in_memory": dict(direct_running_mode="in_memory", direct_num_workers=1),
    "multi_processing": dict(direct_running_mode="multi_processing", direct_num_workers=2),
}


class _Fields(beam.DoFn):  # type: ignore[misc]
    """Encrypt or decrypt fields with a pkcs11: source opened on the worker."""

    def __init__(self, encrypt: bool, uri: str) -> None:
        self._encrypt, self._uri = encrypt, uri

    def setup(self) -> None:
        source = open_pkcs11_source(parse_key_uri(self._uri))
        if self._encrypt:
            calls = Metrics.counter("kmsbeam", "kms_calls_generate_data_key")
            self._engine: Any = FieldEncryptor(FIELDS, source, context=CONTEXT, bind=["id"],
                                               on_generate=calls.inc)  # fmt: skip
        else:
            calls = Metrics.counter("kmsbeam", "kms_calls_decrypt")
            self._engine = FieldDecryptor(FIELDS, source, context=CONTEXT, bind=["id"], on_call=calls.inc)

    def start_bundle(self) -> None:
        if self._encrypt:
            self._engine.reset()  # one data key per bundle, as EncryptFields does

    def process(self, record: dict[str, Any]) -> Any:
        yield self._engine.encrypt(record) if self._encrypt else self._engine.decrypt(record)


def dispatches(uri: str) -> bool:
    """Whether the lead has wired pkcs11: into kmsbeam.open_key_source yet."""
    try:
        open_key_source(uri)
    except ConfigurationError as exc:
        if "not available yet" in str(exc):
            return False
        raise
    return True


def transforms(uri: str) -> tuple[Any, Any]:
    if dispatches(uri):
        from kmsbeam.transforms import DecryptFields, EncryptFields

        return (EncryptFields(uri, FIELDS, context=CONTEXT, bind=["id"]),
                DecryptFields(uri, FIELDS, context=CONTEXT, bind=["id"]))  # fmt: skip
    return beam.ParDo(_Fields(True, uri)), beam.ParDo(_Fields(False, uri))


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:03d}-45-6789", "contact": {"email": f"u{i}@example.com"}} for i in range(n)]


def counters(result: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + c.committed
    return out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fields_round_trip(kek: str, mode: str) -> None:
    data = records(2000)
    options = PipelineOptions(flags=[], **MODES[mode])
    p = beam.Pipeline(runner=fn_api_runner(options), options=options)  # never "DirectRunner"
    encrypt, decrypt = transforms(kek)
    enc = p | beam.Create(data) | "Enc" >> encrypt
    leaked = enc | beam.Filter(lambda r: r["ssn"].endswith("6789") or "@example" in r["contact"]["email"])
    assert_that(leaked, equal_to([]), label="ciphertext")
    back = enc | beam.Reshuffle() | "Dec" >> decrypt
    assert_that(back, equal_to(data), label="plaintext")
    before = hsm_call_counts()
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    workers = MODES[mode]["direct_num_workers"]
    assert 1 <= c["kms_calls_generate_data_key"] <= 4 * workers  # one per bundle
    assert 1 <= c["kms_calls_decrypt"] <= c["kms_calls_generate_data_key"] * workers  # per DEK per worker
    if mode == "in_memory":  # the workers are this process: the HSM saw exactly those calls
        calls = {k: v - before.get(k, 0) for k, v in hsm_call_counts().items()}
        assert calls["C_GenerateKey"] == c["kms_calls_generate_data_key"]
        assert calls["C_UnwrapKey"] == c["kms_calls_decrypt"]
