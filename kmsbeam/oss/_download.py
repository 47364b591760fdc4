"""``OssReader``: a seekable, readable file over one OSS object, by ranged GETs.

Reads go through windows of ``read_window`` bytes (one ranged GET each), so a seek costs
nothing until the next read, and memory is one network buffer. A window cut short by a
connection reset or a short body is resumed from the last byte received, within the retry
budget; an object that changes size while being read is an error.
"""

from __future__ import annotations

import io
import random
import time
from typing import TYPE_CHECKING, Any

from kmsbeam.oss._errors import is_retryable, map_error

if TYPE_CHECKING:
    from kmsbeam.oss._client import OssClient

__all__ = ["OssReader"]


class OssReader(io.RawIOBase):
    """See the module docstring. ``size`` skips the HEAD when the caller knows it."""

    mode = "rb"

    def __init__(self, client: OssClient, url: str, *, size: int | None = None) -> None:
        super().__init__()
        self._client = client
        self._url = url
        self._config = client.config
        self.size = client.head(url).size if size is None else size
        self._pos = 0
        self._stream: Any = None
        self._end = 0  # exclusive end of the open window
        self.requests = 0

    def __repr__(self) -> str:
        return f"OssReader({self._url!r}, size={self.size})"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        if target != self._pos:
            self._drop()
            self._pos = target
        return target

    def _drop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # closing a broken connection: nothing to keep
                pass
            self._stream = None

    def _open(self) -> None:
        end = min(self.size, self._pos + self._config.read_window)
        start = self._pos
        self._stream = self._client.call(
            self._url, "get", lambda b, k: self._client.bucket(b.bucket_name, crc=False)
            .get_object(k, byte_range=(start, end - 1)))  # fmt: skip
        self._end = end
        self.requests += 1

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        want = min(len(out), self.size - self._pos)
        if want <= 0:
            return 0
        attempt = 1
        while True:
            try:
                if self._stream is None:
                    self._open()
                chunk = self._stream.read(min(want, self._end - self._pos))
                if not chunk:
                    raise ConnectionError("the OSS response ended before its range did")
                n = len(chunk)
                out[:n] = chunk
                self._pos += n
                if self._pos >= self._end:
                    self._drop()
                return n
            except Exception as exc:
                self._drop()
                if attempt >= self._config.max_attempts or not is_retryable(exc):
                    raise map_error(exc, self._url, "get") from exc
                ceiling = self._config.backoff_seconds * 2 ** (attempt - 1)
                time.sleep(random.uniform(0, min(ceiling, self._config.max_backoff_seconds)))
                attempt += 1

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = self.read(max(1 << 16, min(self.size - self._pos, 64 << 20)))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def close(self) -> None:
        self._drop()
        super().close()
