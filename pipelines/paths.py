"""Job paths as Beam FileSystems paths: local files and ``scheme://`` URLs alike.

Every job reads, lists, writes and deletes its data through these functions, which go through
``apache_beam.io.filesystems.FileSystems``, so ``oss://`` (always: importing this module
registers it), ``s3://``, ``hdfs://``, ``gs://`` (when their Beam extras are installed) and
local paths work the same way. Paths stay ``str``: ``pathlib.Path("oss://b/k")`` is
``oss:/b/k``, so remote paths are never built with pathlib.

::

    out = paths.normalize(args.output, "the output")   # abspath, or a checked URL
    paths.join(out, "_kmsbeam.json")                   # oss://b/enc/_kmsbeam.json
    paths.match("oss://b/raw/*.jsonl")                 # sorted file paths ([] when none)
    paths.list_dir(out)                                # every file under out/ (recursive)
    paths.write_bytes(paths.join(out, "x"), b"...")    # create (parents too, locally)

A failure inside Beam's FileSystem (``BeamIOError``) comes back as the kmsbeam error it wraps
(``OssError``, ``OssCredentialsError``, ``FileNotFoundError``), so callers see one sentence.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

import kmsbeam.transforms  # noqa: F401  (registers oss:// with Beam)
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from kmsbeam import ConfigurationError, KmsBeamError

__all__ = [
    "absolute", "basename", "delete", "delete_tree", "exists", "is_dir", "is_remote", "join",
    "list_dir", "list_files", "match", "normalize", "open_read", "parent", "read_bytes",
    "read_text", "remove_empty_dir", "remove_temporaries", "remove_tree", "scheme", "size",
    "use_options", "write_bytes", "write_text",
]  # fmt: skip

_SCHEME = re.compile(r"^([a-zA-Z][-a-zA-Z0-9+.]*)://")
_ONE_SLASH = re.compile(r"^([a-zA-Z][-a-zA-Z0-9+.]+):/(?!/)")  # pathlib's mangling of a URL
_GLOB = re.compile(r"[*?\[]")


def use_options(beam_args: list[str]) -> None:
    """Let the launcher's filesystems see the job's Beam options (``--oss_endpoint`` ...)
    before the pipeline exists (Beam sets them itself when it builds the pipeline)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(beam_args)))


def scheme(path: str) -> str | None:
    """``"oss"`` for ``oss://b/k``; None for a local path."""
    found = _SCHEME.match(path)
    return found.group(1).lower() if found else None


def is_remote(path: str) -> bool:
    return scheme(path) is not None


def normalize(path: str | os.PathLike[str], what: str = "the path") -> str:
    """A local path made absolute, or a URL whose scheme a registered filesystem handles.

    Raises:
        ConfigurationError: no registered filesystem handles the scheme (checked before
            anything runs), or the path looks like a URL that lost a slash (``oss:/b/k``).
    """
    text = os.fspath(path)
    found = scheme(text)
    if found is None:
        bad = _ONE_SLASH.match(text)
        if bad:
            raise ConfigurationError(f"{what} {text} looks like a URL with one slash; write "
                                     f"{bad.group(1)}://... (or ./{text} for a local path)")  # fmt: skip
        return os.path.abspath(text) + ("/" if text.endswith("/") and len(text) > 1 else "")
    try:
        FileSystems.get_filesystem(text)
    except (ValueError, BeamIOError):
        raise ConfigurationError(
            f"no filesystem handles {found}:// paths ({what}); use a local path or oss://, or "
            "install the Apache Beam extra for it (s3://: aws, gs://: gcp, hdfs://: hadoop)"
        ) from None
    return text


def absolute(path: str) -> str:
    """``path`` as every worker must see it (``normalize``): a local path made absolute
    (without a trailing slash), a remote one checked against the registered filesystems."""
    norm = normalize(path, "the path")
    return norm if is_remote(norm) or len(norm) <= 1 else norm.rstrip("/")


def _strip(path: str) -> str:
    """``path`` without trailing slashes (but never shorter than ``scheme://bucket``)."""
    stripped = path.rstrip("/")
    return stripped if stripped and not stripped.endswith(":") else path


def join(base: str, *names: str) -> str:
    """``base/name/...``; never through pathlib (``oss://`` keeps its two slashes)."""
    if not is_remote(base):
        return os.path.join(base, *names)
    out = _strip(base)
    for name in names:
        out = out + "/" + name.strip("/")
    return out


def parent(path: str) -> str:
    """The directory (or prefix) holding ``path``: ``oss://b/a`` for ``oss://b/a/x``."""
    if not is_remote(path):
        return os.path.dirname(os.path.normpath(path))
    text = _strip(path)
    head = text.rpartition("/")[0]
    return head if not head.endswith(":/") else text


def basename(path: str) -> str:
    if not is_remote(path):
        return os.path.basename(os.path.normpath(path))
    return _strip(path).rpartition("/")[2]


def _inner(exc: BaseException) -> BaseException:
    """The kmsbeam (or FileNotFoundError) error a BeamIOError wraps, else ``exc``."""
    details = getattr(exc, "exception_details", None) or {}
    for err in details.values() if isinstance(details, dict) else ():
        if isinstance(err, (KmsBeamError, FileNotFoundError)):
            return err
        if isinstance(err, BeamIOError):
            return _inner(err)
    cause = exc.__cause__
    if isinstance(cause, (KmsBeamError, FileNotFoundError)):
        return cause
    return exc


@contextlib.contextmanager
def _unwrapped() -> Iterator[None]:
    try:
        yield
    except BeamIOError as exc:
        inner = _inner(exc)
        if inner is exc:
            raise
        raise _usage(inner) from None
    except KmsBeamError as exc:
        raise _usage(exc) from None


def _usage(exc: BaseException) -> BaseException:
    """A missing bucket is a usage mistake (exit 2), like a missing local directory."""
    if isinstance(exc, KmsBeamError) and getattr(exc, "code", None) == "NoSuchBucket":
        return ConfigurationError(f"{exc}; create it or correct the name")
    return exc


def match(pattern: str) -> list[str]:
    """The files a path or glob names, sorted; ``[]`` when none (directories are not files)."""
    with _unwrapped():
        found = FileSystems.match([pattern])[0].metadata_list
    files = [m.path for m in found]
    if not is_remote(pattern):
        files = [f for f in files if os.path.isfile(f)]
    return sorted(files)


def list_files(directory: str, pattern: str = "*") -> list[str]:
    """The sorted files matching ``directory/pattern`` (none if absent)."""
    if not is_remote(directory) and not os.path.isdir(directory):
        return []
    return match(join(directory, pattern))


def list_dir(directory: str) -> list[str]:
    """Every file under ``directory`` (recursively), sorted; ``[]`` for none or no directory."""
    if not is_remote(directory) and not os.path.isdir(directory):
        return []
    return match(join(directory, "**"))


def is_dir(path: str) -> bool:
    """A local directory, or a remote prefix ``path/`` with at least one object under it."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(list_dir(path))


def exists(path: str) -> bool:
    """A file (an object) at ``path``."""
    if not is_remote(path):
        return os.path.isfile(path)
    with _unwrapped():
        return bool(FileSystems.exists(path))


def size(path: str) -> int:
    with _unwrapped():
        return int(FileSystems.get_filesystem(path).size(path))


def read_bytes(path: str) -> bytes:
    with _unwrapped(), FileSystems.open(path, compression_type="uncompressed") as f:
        data: bytes = f.read()
    return data


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Create ``path`` holding ``data`` (local parent directories are made)."""
    with _unwrapped():
        f = FileSystems.create(path, mime_type=mime_type, compression_type="uncompressed")
        try:
            f.write(data)
        finally:
            f.close()


def delete(files: Iterable[str]) -> None:
    """Delete files (objects); missing ones are fine."""
    todo = [f for f in files if is_remote(f) or os.path.lexists(f)]
    if todo:
        with _unwrapped():
            FileSystems.delete(todo)


def remove_tree(directory: str) -> None:
    """Delete ``directory`` and everything under it (a remote prefix: every object under it)."""
    if not is_remote(directory):
        shutil.rmtree(directory, ignore_errors=True)
        return
    delete(list_dir(directory))


def delete_tree(path: str) -> None:
    """Delete a file (an object), or a directory (prefix) and everything under it; absent is fine."""
    if exists(path):
        delete([path])
    else:
        remove_tree(path)


def remove_empty_dir(directory: str) -> None:
    """Remove a local directory that holds nothing (remote prefixes have no directories)."""
    if not is_remote(directory) and os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)


def remove_temporaries(directory: str) -> None:
    """Delete Beam's ``beam-temp-*`` folders (partial output) under ``directory``."""
    base = _strip(directory) + "/"
    tops = {f[len(base):].split("/")[0] for f in list_dir(directory) if f.startswith(base)}
    for name in sorted(t for t in tops if t.startswith("beam-temp-")):
        remove_tree(join(directory, name))
    if not is_remote(directory) and os.path.isdir(directory):  # empty local temp folders too
        for name in os.listdir(directory):
            if name.startswith("beam-temp-"):
                shutil.rmtree(join(directory, name), ignore_errors=True)


def open_read(path: str) -> Any:
    """A seekable binary reader (Parquet footers, CSV headers); close it (``with``)."""
    with _unwrapped():
        return FileSystems.open(path, compression_type="uncompressed")
