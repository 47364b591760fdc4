"""``oss://`` for Apache Beam: a FileSystem plugin over ``kmsbeam.oss``.

Importing ``kmsbeam.transforms`` registers it (Beam finds FileSystem subclasses that have
been imported), so ``beam.io.WriteToText("oss://bucket/raw/x")``, ``ReadFromText``,
``ReadFromParquet``/``WriteToParquet`` and ``fileio.MatchFiles`` work in the launching
process and on in-process workers. Workers in other processes import it when a kmsbeam
transform is unpickled there; a pipeline made only of Beam's own IOs needs
``--beam_plugins kmsbeam.transforms`` (Dataflow adds imported plugins by itself). Beam has no
entry-point discovery for filesystems in 2.77.

Settings come from ``OssOptions`` pipeline options (``--oss_endpoint``, ``--oss_region``,
``--oss_auth_version``, ``--oss_part_size``, ``--oss_upload_threads``) over the
``KMSBEAM_OSS_*`` environment; credentials only from the Alibaba credential chain of each
worker process, never from options.

Caveats: OSS has no directories: ``mkdirs`` does nothing and deleting ``oss://b/dir`` deletes
the objects under ``oss://b/dir/``. A rename is a copy then a delete (not atomic). Objects
written through ``create`` become visible only when the file is closed.
"""

from __future__ import annotations

import io
from typing import Any

from apache_beam.io.filesystem import (
    BeamIOError,
    CompressedFile,
    CompressionTypes,
    FileMetadata,
    FileSystem,
)
from apache_beam.options.pipeline_options import PipelineOptions

from kmsbeam.oss import OssClient, OssConfig, oss_client, parse_oss_url

__all__ = ["OssFileSystem", "OssOptions", "config_from_options"]

_OPTIONS = ("endpoint", "region", "auth_version", "part_size", "upload_threads")


class OssOptions(PipelineOptions):
    """Pipeline options for ``oss://`` paths (no credentials here: they never travel)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--oss_endpoint", default=None,
                            help="OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com")  # fmt: skip
        parser.add_argument("--oss_region", default=None, help="OSS region (V4 signatures)")
        parser.add_argument("--oss_auth_version", default=None, choices=("v1", "v4"),
                            help="OSS request signature version (default v1)")  # fmt: skip
        parser.add_argument("--oss_part_size", type=int, default=None,
                            help="multipart upload part size in bytes (default 8 MiB)")  # fmt: skip
        parser.add_argument("--oss_upload_threads", type=int, default=None,
                            help="parts uploaded in parallel per object (default 4)")  # fmt: skip


def config_from_options(options: Any) -> OssConfig:
    """``OssConfig`` from the environment, overridden by ``--oss_*`` pipeline options (a
    ``PipelineOptions``, a dict of them, or None)."""
    if isinstance(options, PipelineOptions):
        values = options.view_as(OssOptions).get_all_options()
    elif isinstance(options, dict):
        values = options
    else:
        values = {}
    return OssConfig.from_env(**{name: values.get(f"oss_{name}") for name in _OPTIONS})


class OssFileSystem(FileSystem):
    """Beam's FileSystem for ``oss://bucket/key`` (see the module docstring)."""

    def __init__(self, pipeline_options: Any) -> None:
        super().__init__(pipeline_options)
        self._config = config_from_options(pipeline_options)

    @classmethod
    def scheme(cls) -> str:
        return "oss"

    def _client(self) -> OssClient:
        return oss_client(self._config)

    def client(self) -> OssClient:
        """The OSS client of this filesystem's configuration (``--oss_*`` options over the
        environment): for calls Beam's FileSystem API has no word for, such as a create-once
        PutObject (``kmsbeam.transforms.vault_fs``)."""
        return self._client()

    def join(self, basepath: str, *paths: str) -> str:
        parse_oss_url(basepath)
        out = basepath
        for part in paths:
            out = out.rstrip("/") + "/" + part.lstrip("/")
        return out

    def split(self, path: str) -> tuple[str, str]:
        bucket, key = parse_oss_url(path)
        head, _, tail = key.rpartition("/")
        return (f"oss://{bucket}/{head}" if head else f"oss://{bucket}"), tail

    def mkdirs(self, path: str) -> None:
        """OSS has no directories: nothing to create."""

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str) -> Any:
        try:
            for info in self._client().list(dir_or_prefix):
                yield FileMetadata(info.url, info.size, info.last_modified)
        except Exception as exc:
            raise BeamIOError("List operation failed", {dir_or_prefix: exc}) from exc

    def _wrap(self, raw: Any, path: str, compression_type: str) -> Any:
        if compression_type == CompressionTypes.AUTO:
            compression_type = CompressionTypes.detect_compression_type(path)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path: str, mime_type: str = "application/octet-stream",
               compression_type: str = CompressionTypes.AUTO) -> Any:  # fmt: skip
        """A writer for ``path``; the object appears on ``close()`` (multipart beyond one part)."""
        return self._wrap(self._client().open_write(path, content_type=mime_type), path, compression_type)

    def open(self, path: str, mime_type: str = "application/octet-stream",
             compression_type: str = CompressionTypes.AUTO) -> Any:  # fmt: skip
        """A seekable, buffered reader over ranged GETs."""
        raw = io.BufferedReader(self._client().open_read(path), buffer_size=1 << 20)
        return self._wrap(raw, path, compression_type)

    def _each(self, what: str, pairs: list[tuple[str, str]], fn: Any) -> None:
        errors = {}
        for src, dst in pairs:
            try:
                fn(src, dst)
            except Exception as exc:
                errors[(src, dst)] = exc
        if errors:
            raise BeamIOError(f"{what} operation failed", errors)

    def _expand(self, src: str, dst: str) -> list[tuple[str, str]]:
        """Object pairs for a copy: a ``/``-ended source copies everything under it."""
        if not src.endswith("/"):
            return [(src, dst)]
        base = dst if dst.endswith("/") else dst + "/"
        return [(i.url, base + i.url[len(src) :]) for i in self._client().list(src)]

    def copy(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        if len(source_file_names) != len(destination_file_names):
            raise BeamIOError("copy: source and destination lists differ in length")
        pairs = [p for s, d in zip(source_file_names, destination_file_names) for p in self._expand(s, d)]
        self._each("Copy", pairs, lambda s, d: self._client().copy(s, d))

    def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        if len(source_file_names) != len(destination_file_names):
            raise BeamIOError("rename: source and destination lists differ in length")
        pairs = [p for s, d in zip(source_file_names, destination_file_names) for p in self._expand(s, d)]

        def move(src: str, dst: str) -> None:
            self._client().copy(src, dst)
            self._client().delete(src)

        self._each("Rename", pairs, move)

    def exists(self, path: str) -> bool:
        try:
            return self._client().exists(path)
        except Exception as exc:
            raise BeamIOError("exists() operation failed", {path: exc}) from exc

    def _head(self, what: str, path: str) -> Any:
        try:
            return self._client().head(path)
        except Exception as exc:
            raise BeamIOError(f"{what} operation failed", {path: exc}) from exc

    def size(self, path: str) -> int:
        return int(self._head("size()", path).size)

    def last_updated(self, path: str) -> float:
        return float(self._head("last_updated", path).last_modified)

    def checksum(self, path: str) -> str:
        return str(self._head("Checksum", path).etag)

    def metadata(self, path: str) -> FileMetadata:
        info = self._head("Metadata", path)
        return FileMetadata(path, info.size, info.last_modified)

    def delete(self, paths: list[str]) -> None:
        """Delete objects; a path that is no object deletes what is under ``path/``."""
        errors = {}
        client = self._client()
        for path in paths:
            try:
                if not path.endswith("/") and client.exists(path):
                    client.delete(path)
                    continue
                for info in list(client.list(path if path.endswith("/") else path + "/")):
                    client.delete(info.url)
            except Exception as exc:
                errors[path] = exc
        if errors:
            raise BeamIOError("Delete operation failed", errors)
