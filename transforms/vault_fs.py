"""Key vaults on any Beam filesystem (``oss://``, ``s3://``, ``gs://``...): the
``kmsbeam.vault.VaultStore`` over ``FileSystems``, registered on import of
``kmsbeam.transforms`` (local paths keep ``kmsbeam.vault.LocalStore``, which creates entries
with a link: create-once even between processes).

On ``oss://`` every operation is one OSS request through the filesystem's own client (its
``--oss_*`` options): ``create`` is a PutObject with ``x-oss-forbid-overwrite`` (create-once on
the server, so two writers of one name never both win), ``read`` one GetObject, ``list`` one
ListObjectsV2 per 1,000 names. Other schemes have no create-if-absent in Beam's API, so
``create`` checks that the name does not exist, then writes it: an object appears whole when
its writer closes (a crash leaves no entry, never a torn one). Generation 1 of an entry is
written by the one worker that generated its data key (no other writer has that name);
generation n+1 by ``kmsbeam vault rotate``, one at a time per vault.
"""

from __future__ import annotations

from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from kmsbeam.errors import KeySourceUnavailableError
from kmsbeam.transforms.ossfs import OssFileSystem
from kmsbeam.vault import register_store_opener

__all__ = ["BeamVaultStore"]

_RAW = CompressionTypes.UNCOMPRESSED


class BeamVaultStore:
    """A key vault under a Beam filesystem prefix (``oss://bucket/_keys/``)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._base = uri if uri.endswith("/") else uri + "/"
        self._client: Any = None  # the OSS client, looked up once (building a FileSystem parses options)
        self._looked = False

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"BeamVaultStore({self._uri!r})"

    def _path(self, name: str) -> str:
        if not name or any(p in ("", ".", "..") for p in name.split("/")):
            raise ValueError("a vault name is a relative path without . or .. parts")
        return self._base + name

    def _failed(self, what: str, exc: Exception) -> KeySourceUnavailableError:
        return KeySourceUnavailableError(f"the key vault {self._uri} could not be {what}: "
                                         f"{type(exc).__name__}")  # fmt: skip

    def _oss(self, path: str) -> Any:
        """The OSS client of this vault (every path is under its prefix), or None when it is
        not on ``oss://``; looked up once per store."""
        if not self._looked:
            fs = FileSystems.get_filesystem(self._base) if self._base.startswith("oss://") else None
            self._client = fs.client() if isinstance(fs, OssFileSystem) else None
            self._looked = True
        return self._client

    def create(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Object stores: an object is durable when its write returns (``durable`` changes
        nothing); a local path opened through Beam is written whole at close."""
        path = self._path(name)
        oss = self._oss(path)
        if oss is not None:
            try:
                oss.put(path, data, overwrite=False)
            except FileExistsError:
                return False
            except Exception as exc:
                raise self._failed("written", exc) from exc
            return True
        try:
            if FileSystems.exists(path):
                return False
            with FileSystems.create(path, mime_type="application/json", compression_type=_RAW) as f:
                f.write(data)
        except Exception as exc:  # Beam wraps every backend's error in its own types
            raise self._failed("written", exc) from exc
        return True

    def read(self, name: str) -> bytes | None:
        """One GET when ``name`` exists (readers read names a listing gave); a failed read
        asks whether it exists only then."""
        path = self._path(name)
        oss = self._oss(path)
        if oss is not None:
            try:
                got: bytes = oss.call(path, "get", lambda b, k: b.get_object(k).read())
            except FileNotFoundError:
                return None
            except Exception as exc:
                raise self._failed("read", exc) from exc
            return got
        try:
            with FileSystems.open(path, compression_type=_RAW) as f:
                data: bytes = f.read()
        except Exception as exc:
            try:
                missing = not FileSystems.exists(path)
            except Exception:
                missing = False
            if missing:
                return None
            raise self._failed("read", exc) from exc
        return data

    def sync(self) -> None:
        """Nothing to do: every create was durable when it returned."""

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            if FileSystems.exists(path):
                FileSystems.delete([path])
        except Exception as exc:
            raise self._failed("written", exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        n = len(self._base)
        oss = self._oss(self._base)
        if oss is not None:
            try:
                return [i.url[n:] for i in oss.list(self._base + prefix) if i.url.startswith(self._base)]
            except Exception as exc:
                raise self._failed("listed", exc) from exc
        try:
            found = FileSystems.match([self._base + prefix + "**"])[0].metadata_list
        except Exception as exc:
            if "No files found" in str(exc) or "not found" in str(exc).lower():
                return []
            raise self._failed("listed", exc) from exc
        return [m.path[n:] for m in found if m.path.startswith(self._base)]


register_store_opener(BeamVaultStore)
