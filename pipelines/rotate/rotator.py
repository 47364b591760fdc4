"""The interface between ``kmsbeam rotate``'s job and one format.

A ``Rotator`` is what one format contributes to a rotation: the files it rotates, a
``dry_run`` that counts what would move, ``rotate`` that moves it, ``verify`` that reads the
result back (``--verify``/``--verify-sample``) and ``write_rotation`` for the rotation manifest.
The job (``kmsbeam.pipelines.rotate.job``) picks the rotator, locks, runs, verifies, writes the
manifest last and prints the summary for every format alike.

Also here: what every format takes from the command line (the caller's key sources).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmsbeam.keys.strict import KeyRequirement, qualify_key
from kmsbeam.keys.trust import TrustedKeySources

__all__ = ["Outcome", "Rotator", "Verified", "required_keys", "trusted_sources"]

Rows = list[tuple[str, str]]


@dataclass
class Outcome:
    """What a dry run or a rotation did: the summary table, the rotation manifest (not on a dry
    run), and ``warning``, a sentence for what could not be rotated (the exit code is then 1)."""

    title: str
    rows: Rows
    rotation: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None
    failed: bool = False
    exit_code: Callable[[], int] = lambda: 0  # records: the dead-letter budget (0 or 3)


@dataclass
class Verified:
    """What ``--verify`` read back: the manifest's ``verify`` entry, its rows, the failures."""

    report: dict[str, Any]
    rows: Rows
    failed: int


class Rotator(Protocol):
    """One format's part of a rotation (see the module docstring)."""

    def files(self) -> list[str]:
        """The data files this rotation reads."""

    def dry_run(self) -> Outcome:
        """Count data keys, files and calls; change nothing."""

    def rotate(self) -> Outcome:
        """Move the data keys (or rewrite the files) under the target key."""

    def verify(self, fraction: float | None) -> Verified:
        """Decrypt all of the result (``fraction`` None) or an evenly spread sample."""

    def write_rotation(self, text: str) -> None:
        """Write the rotation manifest (last: it marks the rotation finished)."""


def trusted_sources(args: argparse.Namespace) -> TrustedKeySources:
    """The caller's key sources: ``--to-key``, ``--only-key`` and ``KMSBEAM_KEY_SOURCES``.
    Key URIs in the dataset's manifests are hints resolved against these (``kmsbeam.keys.trust``)."""
    required = [u for u in getattr(args, "require_key", None) or [] if ":" in u.split("/", 1)[0]]
    return TrustedKeySources.configured(getattr(args, "to_key", None),
                                        *(getattr(args, "only_key", None) or []), *required)  # fmt: skip


def required_keys(args: argparse.Namespace, to_key: str) -> tuple[str, ...]:
    """``--require-key`` as key URIs (bare key ids in the target's key source, which must hold
    the data keys to rewrap them), their versions learnt now."""
    items = getattr(args, "require_key", None)
    if not items:
        return ()
    requirement = KeyRequirement([qualify_key(item, to_key) for item in items])
    requirement.versions()  # an unknown key fails before anything is written
    return requirement.keys

