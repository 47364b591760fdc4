"""Fuzz targets for each key source's wrapped-key layout: the engine CiphertextBlob behind the
embedded keystore (``local:``), the PKCS#11 blob, the Alibaba Cloud KMS CiphertextBlob as the SDK
returns it, and ``wrapped_key_version`` (rotation names versions from wrapped keys)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from alibabacloud_kms20160120 import models
from fuzzlib import Target, as_text, attempt

from kmsbeam.alikms import AlibabaKmsKeySource
from kmsbeam.alikms._instance_blob import instance_blob, instance_wrapped, instance_wrapped_key_version
from kmsbeam.errors import AuthenticationError, KeySourceError, MalformedValueError
from kmsbeam.kms import _blob as engine_blob
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.pkcs11._blob import Blob, BlobError
from kmsbeam.keys.registry import wrapped_key_version

VECTORS = Path(__file__).resolve().parents[1] / "pkcs11" / "vectors.json"
CONTEXTS = ({}, {"dataset": "d"}, {"column": "ssn", "table": "customers"})


class LocalBlobTarget(Target):
    """The engine CiphertextBlob through a real embedded keystore: ``LocalKeySource.
    decrypt_data_key`` (kind byte, ``_blob.split``, version lookup, ``open_blob``). A wrapped
    key unwraps only as generated, under its own context, to its own data key."""

    name = "kms_blob"

    def __init__(self, workdir: Path) -> None:
        self.source = LocalKeySource("local:alias/fuzz", home=workdir / "keystore", create=True)
        self.known: dict[tuple[bytes, str], bytes] = {}
        self.wrapped: list[bytes] = []
        for context in CONTEXTS:
            for _ in range(2):
                key = self.source.generate_data_key(context)
                self.wrapped.append(key.wrapped)
                self.known[(key.wrapped, json.dumps(context, sort_keys=True))] = key.plaintext

    def seeds(self) -> list[bytes]:
        return list(self.wrapped)

    def check(self, data: bytes) -> None:
        version = attempt((AuthenticationError,), engine_blob.split, data[1:])
        assert version is None or len(version) == 36
        for context in CONTEXTS:
            dek = attempt((AuthenticationError, KeySourceError), self.source.decrypt_data_key, data, context)
            assert dek == self.known.get((data, json.dumps(context, sort_keys=True))), (
                "a tampered wrapped key unwrapped"
            )
        name = attempt(MALFORMED, wrapped_key_version, data)
        assert name is None or isinstance(name, str)


MALFORMED = (MalformedValueError,)


def pkcs11_vectors() -> list[bytes]:
    vectors = json.loads(VECTORS.read_text("utf-8"))["vectors"]
    return [bytes.fromhex(v["wrapped_key"]) for v in vectors]


class Pkcs11BlobTarget(Target):
    """The PKCS#11 blob v1: ``Blob.decode`` raises only ``BlobError`` and what it reads encodes
    back to the same bytes; ``wrapped_key_version`` names its KEK or refuses."""

    name = "pkcs11_blob"

    def seeds(self) -> list[bytes]:
        return pkcs11_vectors()

    def check(self, data: bytes) -> None:
        blob = attempt((BlobError,), Blob.decode, data[1:])
        if blob is not None:
            assert blob.encode() == data[1:]
            assert len(blob.tag) == 16 and len(blob.wrapped_seed) % 8 == 0
        name = attempt(MALFORMED, wrapped_key_version, data)
        if data[:1] == b"\x03":
            assert (name is None) == (blob is None)
            if blob is not None:
                assert name == f"{blob.token}/{blob.kek_label}/{blob.kek_id.hex()}"


class AlibabaBlobTarget(Target):
    """The Alibaba Cloud KMS CiphertextBlob as the SDK hands it over (base64 text in the
    response body): accepted only in its canonical spelling, kept as ``0x02 || raw bytes``."""

    name = "alikms_blob"

    def __init__(self) -> None:
        self.source = AlibabaKmsKeySource("kms-emulator://127.0.0.1:9/alias/fuzz")

    def seeds(self) -> list[bytes]:
        blobs = [w[1:] for w in LocalBlobSeeds.wrapped()]
        return [base64.b64encode(b) for b in blobs]

    def check(self, data: bytes) -> None:
        text = as_text(data)
        for body in (models.GenerateDataKeyResponseBody(ciphertext_blob=text, request_id="r"),
                     models.ReEncryptResponseBody(ciphertext_blob=text)):  # fmt: skip
            wrapped = attempt((KeySourceError,), self.source._wrap, body, "ReEncrypt")
            if wrapped is None:
                continue
            assert wrapped[0] == 0x02 and base64.b64encode(wrapped[1:]).decode("ascii") == text
            assert self.source._blob(wrapped) == wrapped[1:]
            name = attempt(MALFORMED, wrapped_key_version, wrapped)
            assert (name is None) == (len(wrapped) <= 37 or not wrapped[1:37].isascii())
        blob = attempt((AuthenticationError,), self.source._blob, data)
        assert blob is None or (data[0] == 0x02 and blob == data[1:])


class LocalBlobSeeds:
    """Real engine blobs made with a fixed master key (no keystore needed)."""

    @staticmethod
    def wrapped() -> list[bytes]:
        out = []
        for i, context in enumerate(CONTEXTS):
            ctx = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
            dek = base64.b64encode(bytes([i]) * 32)
            out.append(b"\x02" + engine_blob.seal(f"00000000-0000-4000-8000-{i:012d}",
                                                   bytes(range(32)), bytes([i]) * 12, dek, ctx))  # fmt: skip
        return out


class InstanceBlobTarget(Target):
    """The wrapped keys of kind 0x04 (KMS 3.0 instance gateway): ``instance_blob`` (what
    AdvanceDecrypt sends) and the version reader rotation uses, on any bytes; and the layout
    written from any gateway answer (KeyVersionId, CiphertextBlob) reads back the same."""

    name = "instance_blob"

    def seeds(self) -> list[bytes]:
        out = [instance_wrapped(v, b) for v in ("key-abc-v1", "k" * 255, "a.b:c/d_e-f") for b in (b"\x00", b"blob" * 30)]
        return [w for w in out if w is not None] + [b"\x04\x01", b"\x04\x01\x01v"]

    def check(self, data: bytes) -> None:
        version = attempt(MALFORMED, instance_wrapped_key_version, data)
        blob = attempt((AuthenticationError,), instance_blob, data)
        assert (version is None) == (blob is None)
        if version is not None and blob is not None:
            assert data[:2] == b"\x04\x01" and wrapped_key_version(data) == version
            assert instance_wrapped(version, blob) == data
        cut = data[:1] and data[1 : 1 + 255]
        again = instance_wrapped(as_text(cut), data)
        if again is not None:
            assert instance_blob(again) == data and instance_wrapped_key_version(again) == as_text(cut)
