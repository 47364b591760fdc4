"""Rotation's path operations: thin names over ``kmsbeam.pipelines.paths`` (Beam's
FileSystems, any registered scheme) plus the preparation of a rotation's OUTPUT.

Every job path is a FileSystems path: a local path (made absolute on the launcher, so a
worker in another directory reads the same file) or ``scheme://...`` of a registered
filesystem. A ``scheme://`` no filesystem handles is one ``ConfigurationError`` before
anything runs, never a local folder named ``oss:``. Remote paths are joined as strings with
``/``: ``pathlib`` would turn ``oss://b/k`` into ``oss:/b/k``.
"""

from __future__ import annotations

import os

from kmsbeam.pipelines import paths
from kmsbeam.pipelines.paths import exists, is_dir, is_remote, join, read_bytes, write_bytes

from kmsbeam import ConfigurationError

__all__ = [
    "absolute", "delete_tree", "exists", "is_dir", "is_remote", "join", "list_files",
    "prepare_output", "read_bytes", "read_text", "write_bytes", "write_text",
]  # fmt: skip


def absolute(path: str) -> str:
    """``path`` as every worker must see it (``paths.normalize``): a local path made absolute
    (without a trailing slash), a remote one checked against the registered filesystems."""
    norm = paths.normalize(path, "the path")
    return norm if is_remote(norm) or len(norm) <= 1 else norm.rstrip("/")


def list_files(directory: str, pattern: str = "*") -> list[str]:
    """The sorted files matching ``directory/pattern`` (none if absent)."""
    if not is_remote(directory) and not os.path.isdir(directory):
        return []
    return paths.match(join(directory, pattern))


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def delete_tree(path: str) -> None:
    """Delete a file (an object), or a directory (prefix) and everything under it; absent is fine."""
    if exists(path):
        paths.delete([path])
    else:
        paths.remove_tree(path)


def prepare_output(out_dir: str, dead_dir: str, overwrite: bool, inputs: list[str],
                   ignore: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Make OUTPUT ready for a rotation on any filesystem: refuse an output that is a file or
    holds the input; refuse one with files in it unless ``overwrite`` (then remove kmsbeam's
    own output there). ``ignore`` names entries that do not count (the OSS rotation lock)."""
    from kmsbeam.pipelines.manifest import MANIFEST_NAME
    from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR

    if not is_remote(out_dir) and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigurationError(f"the output {out_dir} is a file; give a directory path")
    base = out_dir.rstrip("/")
    if any(f.rsplit("/", 1)[0] == base for f in inputs):
        raise ConfigurationError("the output directory holds the input; choose another output")
    for directory in (out_dir, dead_dir):
        if not is_remote(directory):
            names = os.listdir(directory) if os.path.isdir(directory) else []
        else:
            names = [f.rsplit("/", 1)[-1] for f in paths.list_dir(directory)]
        present = [n for n in names if n not in ignore]
        if not present:
            continue
        if not overwrite:
            raise ConfigurationError(
                f"the output directory {directory} already contains files; pass --overwrite to "
                "replace kmsbeam's output in it, or choose an empty directory"
            )
        stale = [*list_files(directory, "part-*"), *list_files(directory, "_KEY_MATERIAL_FOR_part-*")]
        for path in stale:
            delete_tree(path)
        delete_tree(join(directory, MANIFEST_NAME))
        delete_tree(join(directory, DEAD_LETTER_DIR))
    if not is_remote(out_dir):
        os.makedirs(out_dir, exist_ok=True)
