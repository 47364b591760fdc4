"""``MultipartWriter``: a writable file that uploads to OSS in parallel parts, memory bounded.

Up to ``part_size`` bytes are one PutObject at ``close()``. Beyond that the writer starts a
multipart upload (user metadata set at initiation), hands each full part to a pool of
``upload_threads`` threads and blocks ``write()`` while that many parts are in flight, so it
holds at most ``(upload_threads + 1) * part_size`` bytes. ``close()`` completes the upload:
until then nothing is visible under the key. A failure, ``abort()``, or leaving a ``with``
block by an exception aborts the upload (OSS then discards its parts). An interrupt that lands
while the initiation is in flight leaves an upload whose id the writer never learned:
``OssClient.abort_uploads`` finds such uploads by prefix (a discarded job calls it).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kmsbeam.oss._client import OssClient

__all__ = ["MultipartWriter"]

META = "x-oss-meta-"


class MultipartWriter(io.BufferedIOBase):
    """See the module docstring. ``parts`` counts the parts uploaded (0: a single put)."""

    mode = "wb"

    def __init__(
        self,
        client: OssClient,
        url: str,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self._url = url
        self._config = client.config
        self._headers = {META + k: v for k, v in (metadata or {}).items()}
        if content_type:
            self._headers["Content-Type"] = content_type
        self._size = self._config.part_size
        self._buf = bytearray(self._size)
        self._fill = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(self._config.upload_threads)
        self._futures: list[Future[Any]] = []
        self._finished = False
        self.parts = 0
        self.bytes_written = 0

    def __repr__(self) -> str:
        return f"MultipartWriter({self._url!r}, parts={self.parts})"

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.bytes_written

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        """Replace the user metadata; allowed until the first part leaves (the header of an
        encrypted object is written before its metadata is known)."""
        if self._upload_id is not None or self._finished:
            raise ValueError("the upload has started: its metadata is fixed")
        self._headers = {k: v for k, v in self._headers.items() if not k.startswith(META)}
        self._headers.update({META + k: v for k, v in metadata.items()})

    def write(self, data: Any) -> int:
        if self._finished:
            raise ValueError(f"write to a closed OSS writer ({self._url})")
        view = memoryview(data).cast("B")
        pos, n = 0, len(view)
        try:
            while pos < n:
                if self._fill == self._size:  # more data follows: the buffer is a part
                    self._send(memoryview(self._buf))
                    self._fill = 0
                take = min(self._size - self._fill, n - pos)
                self._buf[self._fill : self._fill + take] = view[pos : pos + take]
                self._fill += take
                pos += take
        except BaseException:
            self.abort()
            raise
        self.bytes_written += n
        return n

    def _send(self, data: memoryview) -> None:
        """Queue one part for upload, waiting for a free slot; raise a failed part's error."""
        if self._upload_id is None:
            result = self._client.call(self._url, "initiate multipart upload",
                                       lambda b, k: b.init_multipart_upload(k, headers=self._headers))  # fmt: skip
            self._upload_id = result.upload_id
            self._pool = ThreadPoolExecutor(self._config.upload_threads, "kmsbeam-oss-upload")
        self._check()
        self._slots.acquire()
        part = bytes(data)  # copied only once a slot is free: memory stays bounded
        self.parts += 1
        assert self._pool is not None
        self._futures.append(self._pool.submit(self._upload, self.parts, part))

    def _upload(self, number: int, part: bytes) -> Any:
        import oss2

        try:
            result = self._client.call(self._url, f"upload part {number}",
                                       lambda b, k: b.upload_part(k, self._upload_id, number, part))  # fmt: skip
            return oss2.models.PartInfo(number, result.etag, size=len(part), part_crc=result.crc)
        finally:
            self._slots.release()

    def _check(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def close(self) -> None:
        """Upload what is left and complete the object (it becomes visible now)."""
        if self._finished:
            return
        try:
            if self._upload_id is None:
                data = bytes(memoryview(self._buf)[: self._fill])
                self._client.call(self._url, "put", lambda b, k: b.put_object(k, data, headers=self._headers))
            else:
                if self._fill:
                    self._send(memoryview(self._buf)[: self._fill])
                parts = [f.result() for f in self._futures]
                self._complete(parts)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._release()

    def _complete(self, parts: list[Any]) -> None:
        import oss2

        def complete(bucket: Any, key: str) -> Any:
            try:
                return bucket.complete_multipart_upload(key, self._upload_id, parts)
            except oss2.exceptions.NoSuchUpload:
                # A retried complete whose first attempt succeeded but lost its answer.
                if bucket.head_object(key).content_length == self.bytes_written:
                    return None
                raise

        self._client.call(self._url, "complete multipart upload", complete)

    def abort(self) -> None:
        """Discard everything: wait for parts in flight, then abort the multipart upload."""
        if self._finished:
            return
        self._finished = True
        for future in self._futures:
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            import oss2

            def abort(bucket: Any, key: str) -> None:
                try:
                    bucket.abort_multipart_upload(key, self._upload_id)
                except oss2.exceptions.NoSuchUpload:
                    pass

            self._client.call(self._url, "abort multipart upload", abort)
        self._release()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._buf = bytearray()
        self._futures = []
        super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "_finished", True):
            try:
                self.abort()
            except Exception:  # best effort at interpreter exit; OSS lifecycle rules clean up
                pass
