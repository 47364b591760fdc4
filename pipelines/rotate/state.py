"""What one rotation run leaves for the next: the rotation manifest and the journal.

- ``_kmsbeam_rotation.json`` (the rotation manifest, FORMAT.md) is written last: a directory
  holding it is a finished rotation. It records the target key and the version it resolved to,
  and when the run finished.
- ``_kmsbeam_rotation.journal/`` (``kmsbeam.rotation.journal``) is written while the run goes;
  a directory holding it but no manifest is an unfinished rotation, which the same command
  resumes: data keys the journal lists are rewrapped without a call.

By default every run asks the key source for the target's current version (one
``DescribeKey``, or nothing for a PKCS#11 KEK): a rotation run again makes no data-key call,
and a rotation after the alias has moved again, or after an automatic rotation, moves what
must move. With ``--trust-manifest`` a run over data whose rotation manifest names the same
target key URI takes the version from that manifest instead: no KMS call at all when nothing
needs to move, at the price of missing a key change made since (never use it before disabling
an old key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from kmsbeam.pipelines import paths

__all__ = [
    "JOURNAL_NAME",
    "ROTATION_NAME",
    "finished_at",
    "read_rotation",
    "recorded_target",
    "sample_indices",
]

ROTATION_NAME = "_kmsbeam_rotation.json"
JOURNAL_NAME = "_kmsbeam_rotation.journal"


def read_rotation(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The rotation manifest in ``directory`` (any filesystem), or None (absent or unreadable)."""
    path = paths.join(str(directory), ROTATION_NAME)
    try:
        if not paths.exists(path):
            return None
        data = json.loads(paths.read_text(path))
    except Exception:  # noqa: BLE001  (Beam wraps IO errors; unreadable is "none")
        return None
    return data if isinstance(data, dict) else None


def finished_at() -> str:
    """Now, as the manifest's ``finished_at`` (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def recorded_target(rotation: Mapping[str, Any] | None, to_key: str) -> str | None:
    """The target version a finished rotation to ``to_key`` resolved, or None."""
    if not rotation or rotation.get("target_key") != to_key:
        return None
    version = rotation.get("target_version")
    return version if isinstance(version, str) and version else None


def sample_indices(total: int, fraction: float, seed: int = 0) -> list[int]:
    """A deterministic, evenly spread sample of ``round(total * fraction)`` indices (>= 1)."""
    if total <= 0:
        return []
    want = max(1, min(total, round(total * fraction)))
    step = total / want
    offset = (seed % 997) / 997 * step
    return sorted({min(total - 1, int(offset + i * step)) for i in range(want)})
