"""``OssClient``: the OSS operations kmsbeam needs, over ``oss2``, with retries and clear errors.

One client per configuration per process (``oss_client``, in ``kmsbeam.process``), built
lazily where it is used (a Beam worker, the CLI); a forked child builds its own. Objects are
named by ``oss://`` URLs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kmsbeam import process
from kmsbeam.oss._config import OssConfig, credentials_provider, parse_oss_url
from kmsbeam.oss._errors import OssError, map_error, with_retries

__all__ = ["ObjectInfo", "OssClient", "oss_client"]

META = "x-oss-meta-"


@dataclass(frozen=True)
class ObjectInfo:
    """An object as listed or headed: URL, size, mtime (epoch seconds), ETag, user metadata."""

    url: str
    size: int
    last_modified: float
    etag: str = ""
    metadata: Mapping[str, str] | None = None


class OssClient:
    """OSS over ``oss2`` for one configuration. Thread-safe; never pickles (build per process).

    Args:
        config: endpoint, signing, multipart and retry settings.
        environ: where to read credentials from (default ``os.environ``).

    Raises:
        ConfigurationError: no endpoint or no credentials (one sentence saying what to set).
    """

    def __init__(self, config: OssConfig, environ: Mapping[str, str] | None = None) -> None:
        import oss2

        self.config = config
        self._endpoint = config.resolved_endpoint()
        region = config.resolved_region()
        provider = credentials_provider(environ)
        if config.auth_version == "v4":
            self._auth = oss2.ProviderAuthV4(provider)
        else:
            self._auth = oss2.ProviderAuth(provider)
        self._region = region or None
        self._session = oss2.Session(pool_size=max(10, 2 * config.upload_threads))
        self._buckets: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OssClient(endpoint={self._endpoint!r}, auth={self.config.auth_version})"

    def __reduce__(self) -> Any:
        raise TypeError("an OssClient holds credentials and never pickles; pickle its OssConfig")

    def bucket(self, name: str, *, crc: bool | None = None) -> Any:
        """The ``oss2.Bucket`` for ``name`` (CRC-64 checks on uploads per the config)."""
        import oss2

        crc = self.config.crc if crc is None else crc
        with self._lock:
            bucket = self._buckets.get((name, crc))
            if bucket is None:
                bucket = self._buckets[(name, crc)] = oss2.Bucket(
                    self._auth, self._endpoint, name, session=self._session, enable_crc=crc,
                    connect_timeout=self.config.timeout_seconds, region=self._region)  # fmt: skip
            return bucket

    def call(self, url: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(bucket, key, *args, **kwargs)`` for ``url`` with retries and mapped errors."""
        name, key = parse_oss_url(url)
        bucket = self.bucket(name)
        return with_retries(lambda: fn(bucket, key, *args, **kwargs), self.config, url, what)

    def head(self, url: str) -> ObjectInfo:
        """Size, mtime, ETag and user metadata (``x-oss-meta-`` names, prefix removed).

        Raises:
            FileNotFoundError: no such object.
        """
        meta = self.call(url, "head", lambda b, k: b.head_object(k))
        user = {k[len(META) :].lower(): v for k, v in meta.headers.items() if k.lower().startswith(META)}
        return ObjectInfo(url, int(meta.content_length), float(meta.last_modified),
                          str(meta.etag or ""), user)  # fmt: skip

    def exists(self, url: str) -> bool:
        try:
            self.head(url)
        except FileNotFoundError:
            return False
        return True

    def list(self, url: str, *, delimiter: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``url``'s key, in key order (ListObjectsV2, paged).
        With ``delimiter="/"`` common prefixes come back too, as size -1 entries."""
        name, prefix = parse_oss_url(url)
        token = ""
        while True:
            page = self.call(url, "list", lambda b, k, t=token: b.list_objects_v2(
                prefix=k, delimiter=delimiter, continuation_token=t, max_keys=1000))  # fmt: skip
            for obj in page.object_list:
                yield ObjectInfo(f"oss://{name}/{obj.key}", int(obj.size), float(obj.last_modified),
                                 str(obj.etag))  # fmt: skip
            for common in page.prefix_list:
                yield ObjectInfo(f"oss://{name}/{common}", -1, 0.0)
            if not page.is_truncated:
                return
            token = page.next_continuation_token

    def delete(self, url: str) -> None:
        """Delete an object (deleting a missing one succeeds, as in OSS)."""
        self.call(url, "delete", lambda b, k: b.delete_object(k))

    def abort_uploads(self, url: str) -> int:
        """Abort every unfinished multipart upload whose key starts with ``url``'s key (a writer
        that died or was interrupted mid-request leaves one, its parts kept and billed until
        then); returns how many. Listed with ListMultipartUploads, so it finds the uploads of
        writers in any process, also those that never learned their upload's id."""
        import oss2

        name, prefix = parse_oss_url(url)
        uploads = self.call(url, "list multipart uploads", lambda b, k: [
            (u.key, u.upload_id) for u in oss2.MultipartUploadIterator(b, prefix=k) if u.upload_id])  # fmt: skip

        def abort(bucket: Any, key: str, upload_id: str) -> None:
            try:
                bucket.abort_multipart_upload(key, upload_id)
            except oss2.exceptions.NoSuchUpload:
                pass  # completed or aborted meanwhile

        for key, upload_id in uploads:
            self.call(f"oss://{name}/{key}", "abort multipart upload", abort, upload_id)
        return len(uploads)

    def copy(self, source: str, dest: str, metadata: Mapping[str, str] | None = None) -> None:
        """Server-side copy; with ``metadata`` the copy's user metadata is replaced by it
        (``x-oss-metadata-directive: REPLACE``), else copied. Same-URL + metadata updates the
        metadata of an object in place without moving its data."""
        src_bucket, src_key = parse_oss_url(source)
        headers = {}
        if metadata is not None:
            headers = {META + k: v for k, v in metadata.items()}
            headers["x-oss-metadata-directive"] = "REPLACE"
        self.call(dest, "copy", lambda b, k: b.copy_object(src_bucket, src_key, k, headers=headers))

    def put(
        self, url: str, data: bytes, metadata: Mapping[str, str] | None = None, *, overwrite: bool = True
    ) -> None:
        """One PutObject (small objects; use ``open_write`` for anything large).

        ``overwrite=False`` creates the object only if it is absent (``x-oss-forbid-overwrite:
        true``, atomic on the server): an existing object raises ``FileExistsError``. After a
        retried request that raise may mean the first attempt created it: read it to know.
        """
        headers = {META + k: v for k, v in (metadata or {}).items()}
        if not overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        try:
            self.call(url, "put", lambda b, k: b.put_object(k, data, headers=headers))
        except OssError as exc:
            if not overwrite and exc.code == "FileAlreadyExists":
                raise FileExistsError(f"the OSS object {url} already exists") from exc
            raise

    def get(self, url: str) -> bytes:
        """The whole object in memory (small objects; use ``open_read`` for anything large)."""
        with self.open_read(url) as f:
            return bytes(f.read())

    def open_read(self, url: str, *, size: int | None = None) -> Any:
        """A seekable binary reader (``OssReader``): ranged GETs, resumed after resets."""
        from kmsbeam.oss._download import OssReader

        return OssReader(self, url, size=size)

    def open_write(
        self, url: str, metadata: Mapping[str, str] | None = None, content_type: str | None = None
    ) -> Any:
        """A binary writer (``MultipartWriter``): parallel parts, memory bounded by
        ``(upload_threads + 1) * part_size``; nothing is visible until ``close()``."""
        from kmsbeam.oss._upload import MultipartWriter

        return MultipartWriter(self, url, metadata=metadata, content_type=content_type)

    def raise_mapped(self, exc: BaseException, url: str, what: str) -> None:
        raise map_error(exc, url, what) from exc


def oss_client(config: OssConfig | None = None) -> OssClient:
    """The process's client for ``config`` (default: ``OssConfig.from_env()``)."""
    config = OssConfig.from_env() if config is None else config
    return process.shared("oss.client", config, lambda: OssClient(config))


def clear_clients() -> None:
    """Forget this process's clients (the next one re-reads the credential environment)."""
    process.discard("oss.client")
