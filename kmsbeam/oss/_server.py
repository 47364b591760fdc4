"""``LoopbackOssServer``: an OSS-protocol server on 127.0.0.1 for tests, with fault injection.

It speaks the OSS REST API that ``oss2`` (unmodified, path-style addressing on an IP
endpoint) and other SDKs use: PutObject, GetObject (ranges), HeadObject, DeleteObject,
ListObjects v1 and v2 (prefix, delimiter, paging, URL encoding), multipart uploads (initiate,
upload part, list parts, complete, abort, list uploads by prefix) and CopyObject (``x-oss-metadata-directive``
COPY or REPLACE). Every request must carry a valid V1 or V4 signature from a configured
access key; STS keys also need their token. Objects live in memory. ``requests``,
``bytes_in`` and ``bytes_out`` count requests and request/response body bytes by operation
(``get``, ``put``, ``copy``, ...), for tests and benchmarks.

It is public (``kmsbeam.oss.LoopbackOssServer``) so that users can test their own pipelines
that read and write ``oss://`` without network or credentials, with the same checks (bad
keys, skewed clocks) and failures (5xx, resets, cut bodies) real OSS can produce. It is not
a storage service: no TLS, no persistence, no ACLs, no versioning.

::

    with LoopbackOssServer(buckets=["test"]) as oss:
        os.environ.update(oss.environ())   # endpoint + credentials for kmsbeam.oss
        ...
        oss.inject("upload_part", "status", times=2, status=503)   # next 2 parts get a 503
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from typing import Any

from kmsbeam.oss._handler import Handler
from kmsbeam.oss._store import Store

__all__ = ["FAULT_KINDS", "LoopbackOssServer", "OPERATIONS"]

OPERATIONS = ("put", "get", "head", "delete", "list", "copy", "initiate", "upload_part",
              "list_parts", "list_uploads", "complete", "abort", "create_bucket")  # fmt: skip
#: ``status``: answer an error status instead; ``reset``: drop the connection without an
#: answer; ``cut``: (get) send the headers and half the body, then drop the connection
FAULT_KINDS = ("status", "reset", "cut")


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackOssServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients dropping connections are normal


class LoopbackOssServer:
    """See the module docstring.

    Args:
        buckets: buckets that exist from the start (more with ``create_bucket``).
        access_key_id, access_key_secret: the one credential accepted unless more are added.
        region: the region V4 signatures must be scoped to.
        port: 0 picks a free port.
    """

    def __init__(
        self,
        buckets: tuple[str, ...] | list[str] = ("test",),
        *,
        access_key_id: str = "loopback-ak",
        access_key_secret: str = "loopback-secret",
        region: str = "cn-hangzhou",
        port: int = 0,
    ) -> None:
        self.store = Store()
        self.region = region
        self.access_key_id = access_key_id
        self._keys: dict[str, tuple[str, str | None]] = {access_key_id: (access_key_secret, None)}
        self._faults: list[list[Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: Counter[str] = Counter()
        self.bytes_in: Counter[str] = Counter()  # request body bytes, by operation
        self.bytes_out: Counter[str] = Counter()  # response body bytes, by operation
        for name in buckets:
            self.create_bucket(name)
        self._http = _Http(("127.0.0.1", port), Handler)
        self._http.owner = self
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LoopbackOssServer(endpoint={self.endpoint!r}, buckets={sorted(self.store.buckets)})"

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self, *, secret: str | None = None) -> dict[str, str]:
        """The environment kmsbeam.oss reads: endpoint, region and this server's credential."""
        return {
            "KMSBEAM_OSS_ENDPOINT": self.endpoint,
            "KMSBEAM_OSS_REGION": self.region,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": self.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret or self._keys[self.access_key_id][0],
        }

    def add_credential(self, key_id: str, secret: str, token: str | None = None) -> None:
        """Accept another access key (with ``token``: an STS credential needing that token)."""
        with self._lock:
            self._keys[key_id] = (secret, token)

    def keys(self) -> dict[str, tuple[str, str | None]]:
        with self._lock:
            return dict(self._keys)

    def create_bucket(self, name: str) -> None:
        with self.store.lock:
            self.store.buckets.setdefault(name, {})

    def inject(self, operation: str, kind: str = "status", *, times: int = 1, status: int = 503) -> None:
        """Make the next ``times`` requests of ``operation`` fail as ``kind`` (FAULT_KINDS)."""
        if operation not in OPERATIONS or kind not in FAULT_KINDS or times < 1:
            raise ValueError(f"operation in {OPERATIONS}, kind in {FAULT_KINDS}, times >= 1")
        with self._lock:
            self._faults.append([operation, kind, times, status])

    def take_fault(self, operation: str) -> tuple[str, int] | None:
        """The fault to apply to this request, if any (used by the handler)."""
        with self._lock:
            for fault in self._faults:
                if fault[0] == operation and fault[2] > 0:
                    fault[2] -= 1
                    return fault[1], fault[3]
            self._faults = [f for f in self._faults if f[2] > 0]
        return None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def request_id(self) -> str:
        return f"{next(self._ids):024X}"

    def objects(self, bucket: str) -> dict[str, bytes]:
        """What a bucket holds now (key -> data), for assertions."""
        with self.store.lock:
            return {k: o.data for k, o in self.store.bucket(bucket).items()}

    def metadata(self, bucket: str, key: str) -> dict[str, str]:
        """An object's user metadata (``x-oss-meta-`` names without the prefix)."""
        return dict(self.store.get(bucket, key).metadata)

    def uploads(self) -> list[tuple[str, str, int]]:
        """Multipart uploads in progress: (bucket, key, parts received)."""
        with self.store.lock:
            return [(u.bucket, u.key, len(u.parts)) for u in self.store.uploads.values()]

    def start(self) -> LoopbackOssServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._http.serve_forever, name="kmsbeam-oss",
                                            kwargs={"poll_interval": 0.05}, daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> LoopbackOssServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

