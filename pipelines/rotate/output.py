"""A rotation's OUTPUT made ready on any filesystem (``kmsbeam.pipelines.paths``): what it may
hold, and what ``--overwrite`` (or resuming an unfinished rotation) removes from it."""

from __future__ import annotations

import os

from kmsbeam import ConfigurationError
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR
from kmsbeam.pipelines.rotate.lock import LOCK_NAME

__all__ = ["prepare_output"]


def prepare_output(out_dir: str, dead_dir: str, overwrite: bool, inputs: list[str]) -> None:
    """Refuse an output that is a file or holds the input; refuse one with files in it unless
    ``overwrite`` (then remove kmsbeam's own output there). The OSS rotation lock does not count."""
    if not paths.is_remote(out_dir) and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigurationError(f"the output {out_dir} is a file; give a directory path")
    base = out_dir.rstrip("/")
    if any(f.rsplit("/", 1)[0] == base for f in inputs):
        raise ConfigurationError("the output directory holds the input; choose another output")
    for directory in (out_dir, dead_dir):
        if not paths.is_remote(directory):
            names = os.listdir(directory) if os.path.isdir(directory) else []
        else:
            names = [f.rsplit("/", 1)[-1] for f in paths.list_dir(directory)]
        if not [n for n in names if n != LOCK_NAME]:
            continue
        if not overwrite:
            raise ConfigurationError(
                f"the output directory {directory} already contains files; pass --overwrite to "
                "replace kmsbeam's output in it, or choose an empty directory"
            )
        stale = [*paths.list_files(directory, "part-*"),
                 *paths.list_files(directory, "_KEY_MATERIAL_FOR_part-*")]  # fmt: skip
        for path in stale:
            paths.delete_tree(path)
        paths.delete_tree(paths.join(directory, MANIFEST_NAME))
        paths.delete_tree(paths.join(directory, DEAD_LETTER_DIR))
    if not paths.is_remote(out_dir):
        os.makedirs(out_dir, exist_ok=True)
