"""``EncryptObjects`` / ``DecryptObjects``: whole files or objects in object stream v1.

::

    files = p | fileio.MatchFiles("out/enc/part-*")
    done = files | EncryptObjects("alibaba-kms://cn-hangzhou/alias/export",
                                  "oss://bucket/exports/2026-11-23/", base="out/enc/")
    back = p | beam.Create(["oss://bucket/exports/2026-11-23/part-00000.jsonl.kmsb"])
             | DecryptObjects(None, "restored/", base="oss://bucket/exports/2026-11-23/")

Both take the key first (``None`` on decrypt: the key each object names, resolved against the
caller's key sources), then the destination.

Input elements are paths (any Beam filesystem, ``oss://`` included) or ``FileMetadata``; the
output is one dict per object: ``{"source", "destination", "bytes_in", "bytes_out"}``. Each
object gets its own data key; ``oss://`` destinations also carry the wrapped key in
``x-oss-meta-kmsbeam-*`` metadata (a later rewrap replaces only that), and decryption of an
``oss://`` object uses it.

Caveats:
- Memory per element is bounded by the chunk size plus the OSS upload buffers, whatever the
  object size; one element is one object, so parallelism is across objects.
- A destination is written whole or not at all: an OSS upload that fails is aborted, a local
  file that fails is deleted. A retried bundle rewrites its objects with new data keys.
- Decryption authenticates each chunk before writing it, but a destination that fails half
  way has already received the chunks before the bad one (then it is deleted).
- A bad object (unreadable, not an encrypted object, tampered) is a dead letter; a key-source
  failure (unreachable, denied, key disabled, a source that cannot be opened) is not: it fails
  the bundle (the runner retries it) and then the job, with one sentence.
- ``kms_qps`` caps the remote KMS calls of each worker process (``kmsbeam.keys.budget``): the
  fleet makes up to workers x ``kms_qps`` calls/s.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from kmsbeam import ConfigurationError, KeySourceError, check_context
from kmsbeam.formats.objects import DEFAULT_CHUNK_SIZE, ObjectReader, ObjectWriter
from kmsbeam.keys.budget import KmsBudget
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.oss import OssConfig, oss_client
from kmsbeam.reasons import fails_job
from kmsbeam.transforms._base import DEAD_LETTER, KmsDoFn, KmsTransform
from kmsbeam.transforms._options import key_uri
from kmsbeam.transforms.ossfs import OssOptions  # noqa: F401  (registers oss://)

__all__ = ["SUFFIX", "DecryptObjects", "EncryptObjects"]

SUFFIX = ".kmsb"
_COPY = 1 << 20
_RAW = CompressionTypes.UNCOMPRESSED


def _relative(path: str, base: str | None) -> str:
    if base and path.startswith(base):
        return path[len(base) :].lstrip("/")
    return posixpath.basename(path.rstrip("/"))


def _copy(src: Any, dst: Any) -> int:
    buf = bytearray(_COPY)
    view, total = memoryview(buf), 0
    while True:
        n = src.readinto(buf)
        if not n:
            return total
        dst.write(view[:n])
        total += n


def encrypt_object(src: str, dst: str, key: str, *, context: Mapping[str, str] | None = None,
                   chunk_size: int = DEFAULT_CHUNK_SIZE, oss: OssConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Encrypt one file or object ``src`` into ``dst`` (a new data key); returns the summary."""
    if dst.startswith("oss://"):
        raw = oss_client(oss).open_write(dst, content_type="application/octet-stream")
    else:
        raw = FileSystems.create(dst, compression_type=_RAW)
    try:
        writer = ObjectWriter(raw, key, context=context, chunk_size=chunk_size)
    except BaseException:
        getattr(raw, "abort", raw.close)()
        _discard(dst)
        raise
    if dst.startswith("oss://"):
        raw.set_metadata(writer.header.metadata())
    try:
        with FileSystems.open(src, compression_type=_RAW) as source:
            copied = _copy(source, writer)
        writer.close()
    except BaseException:
        writer.abort()
        _discard(dst)
        raise
    return {"source": src, "destination": dst, "bytes_in": copied, "bytes_out": writer.bytes_out}


def decrypt_object(src: str, dst: str, key: str | None = None, *, context: Mapping[str, str] | None = None,
                   oss: OssConfig | None = None, key_sources: Sequence[str] = (),
                   require_keys: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Decrypt one object ``src`` into ``dst``; a failure leaves no ``dst`` behind. For
    ``oss://`` the object's metadata is required and its wrapped key used (a missing metadata
    is a ``FormatError`` naming the object)."""
    if src.startswith("oss://"):
        client = oss_client(oss)
        info = client.head(src)
        raw, metadata = client.open_read(src, size=info.size), info.metadata or {}
    else:
        raw, metadata = FileSystems.open(src, compression_type=_RAW), None
    try:
        reader = ObjectReader(raw, key, context=context, metadata=metadata, where=src,
                              key_sources=key_sources, require_keys=require_keys)  # fmt: skip
    except BaseException:
        raw.close()
        raise
    with reader:
        oss_dst = dst.startswith("oss://")
        out = oss_client(oss).open_write(dst) if oss_dst else FileSystems.create(dst, compression_type=_RAW)
        try:
            copied = _copy(reader, out)
            out.close()
        except BaseException:
            getattr(out, "abort", out.close)()
            _discard(dst)
            raise
    return {"source": src, "destination": dst, "bytes_in": copied, "bytes_out": copied}


def _discard(dst: str) -> None:
    if not dst.startswith("oss://"):
        try:
            FileSystems.delete([dst])
        except Exception:  # nothing was written, or it is gone already
            pass


class _ObjectFn(KmsDoFn):
    """One object per element: ``_one(src, relative name)`` writes it and counts it."""

    def __init__(self, label: str, key: str | None, dest: str, base: str | None,
                 options: dict[str, Any], budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(label, budget)
        self._key, self._dest, self._base, self._options = key, dest, base, options

    def _one(self, src: str, rel: str) -> dict[str, Any]:
        raise NotImplementedError

    def _fails_job(self, exc: BaseException) -> bool:
        return isinstance(exc, (KeySourceError, ConfigurationError)) and fails_job(exc, self.kind)

    def process(self, element: Any) -> Any:
        src = element.path if hasattr(element, "path") else str(element)
        self._counters.records.inc()
        try:
            result = self._one(src, _relative(src, self._base))
        except Exception as exc:
            failed: Exception | None = exc
        else:
            failed = None
        if failed is not None:  # outside the handler: no chain
            if isinstance(failed, KeySourceError) and self._fails_job(failed):  # the call was made
                (self._counters.generate_calls if self.kind == "encrypt" else self._counters.decrypt_calls).inc()
            yield self._dead(src, failed)
            return
        yield result


class _EncryptObjectFn(_ObjectFn):
    kind = "encrypt"

    def _one(self, src: str, rel: str) -> dict[str, Any]:
        result = encrypt_object(src, FileSystems.join(self._dest, rel + SUFFIX), self._key or "", **self._options)
        self._counters.keys.inc()
        self._counters.generate_calls.inc()
        self._counters.encrypted.inc()
        return result


class _DecryptObjectFn(_ObjectFn):
    kind = "decrypt"

    def _one(self, src: str, rel: str) -> dict[str, Any]:
        dst = FileSystems.join(self._dest, rel[: -len(SUFFIX)] if rel.endswith(SUFFIX) else rel)
        result = decrypt_object(src, dst, self._key, **self._options)
        self._counters.decrypt_calls.inc()
        self._counters.decrypted.inc()
        return result


class _Objects(KmsTransform):
    _fn: type[_ObjectFn]

    def __init__(self, key: str | None, destination: str, *, base: str | None = None,
                 context: Mapping[str, str] | None = None, oss: OssConfig | None = None,
                 kms_qps: float | None = None, **extra: Any) -> None:  # fmt: skip
        super().__init__(None, kms_qps)
        if not isinstance(destination, str) or not destination:
            raise TypeError("destination is a directory or prefix, e.g. 'oss://bucket/exports/'")
        self._key = None if key is None else key_uri(key, "local:alias/export")
        self._dest, self._base = destination, base
        self._options = {"context": check_context(context) if context is not None else None,
                         "oss": oss, **extra}  # fmt: skip

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        fn = self._fn(self.label, self._key, self._dest, self._base, self._options, self._budget)
        out = pcoll | "Apply" >> beam.ParDo(fn).with_outputs(DEAD_LETTER, main="objects")
        return out.objects, out[DEAD_LETTER]

    @staticmethod
    def failure(letter: dict[str, Any]) -> str:
        return f"{letter['transform']} failed on {letter['record']}: {letter['reason']}"

    def _shown(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"key": self._key or "(from each object)", "destination": self._dest}
        if self._options.get("chunk_size"):
            shown["chunk_size"] = self._options["chunk_size"]
        return shown


class EncryptObjects(_Objects):
    """Encrypt each input file or object into ``destination`` as ``<name>.kmsb``.

    Args:
        key: key URI of the master key (one data key per object).
        destination: output directory or prefix (local, ``oss://``, any Beam filesystem).
        base: a source prefix whose remainder names the output (default: the basename).
        context: encryption context (stored in each header; not secret).
        chunk_size: plaintext bytes per chunk (default 1 MiB).
        oss: ``OssConfig`` for ``oss://`` ends (default: from the worker's environment).
        kms_qps: remote KMS calls per second allowed to each worker process (``None``: no limit).
    """

    _fn = _EncryptObjectFn

    def __init__(self, key: str, destination: str, *, base: str | None = None,
                 context: Mapping[str, str] | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 oss: OssConfig | None = None, kms_qps: float | None = None) -> None:  # fmt: skip
        if not isinstance(key, str):
            raise TypeError("key is a key URI string such as 'local:alias/export'")
        super().__init__(key, destination, base=base, context=context, oss=oss, kms_qps=kms_qps,
                         chunk_size=chunk_size)  # fmt: skip


class DecryptObjects(_Objects):
    """Decrypt each input object into ``destination`` (the ``.kmsb`` suffix dropped).

    Args:
        key: key URI to unwrap with, or ``None``: the one each object names, a hint resolved
            against ``key_sources`` (see ``kmsbeam.keys.trust``).
        destination: output directory or prefix.
        key_sources: the caller's key URIs that objects' hints may resolve to (added to the
            worker's ``KMSBEAM_KEY_SOURCES``); used only without ``key``.
        require_keys: strict mode (``kmsbeam.keys.strict``): objects whose data key is wrapped
            under any other master key are refused ("key not allowed") before any call.
        base, context, oss, kms_qps: as for ``EncryptObjects`` (context default: each header's).
    """

    _fn = _DecryptObjectFn

    def __init__(self, key: str | None, destination: str, *, base: str | None = None,
                 context: Mapping[str, str] | None = None, oss: OssConfig | None = None,
                 kms_qps: float | None = None, key_sources: Sequence[str] = (),
                 require_keys: Sequence[str] = ()) -> None:  # fmt: skip
        super().__init__(key, destination, base=base, context=context, oss=oss, kms_qps=kms_qps,
                         key_sources=tuple(TrustedKeySources(tuple(key_sources)).uris),
                         require_keys=tuple(require_keys))  # fmt: skip
