"""The ``kmsbeam rotate`` arguments (no Beam import: the CLI builds its parser before Beam
loads; the job itself is in ``kmsbeam.pipelines.rotate.job``)."""

from __future__ import annotations

from typing import Any

from kmsbeam.pipelines.dead_letters import add_budget_argument
from kmsbeam.pipelines.options import (
    add_kms_budget_arguments,
    add_require_key_argument,
    fraction,
    positive_number,
)

__all__ = ["add_rotate_parser"]


def add_rotate_parser(sub: Any) -> None:
    text = "move a dataset written by kmsbeam encrypt to a new master key (rewrap data keys)"
    cmd = sub.add_parser("rotate", help=text, description=text, allow_abbrev=False,
                         epilog="Other options are passed to Beam's PipelineOptions.")  # fmt: skip
    cmd.add_argument("input", metavar="INPUT",
                     help="a directory written by kmsbeam encrypt, or an oss:// export")
    cmd.add_argument("output", metavar="OUTPUT", nargs="?",
                     help="the output directory (not with --in-place)")
    cmd.add_argument("--in-place", action="store_true",
                     help="rewrite key material only: PME datasets with external key material "
                     "(key files) or OSS exports (object metadata, server-side copy)")
    cmd.add_argument("--to-key", metavar="URI",
                     help="the target key URI (default: the manifest's key, e.g. an alias "
                     "that now points at a new key, or a key with a new version)")  # fmt: skip
    cmd.add_argument("--reencrypt", action="store_true",
                     help="new data keys, data decrypted and encrypted again (DEK compromise)")
    cmd.add_argument("--only-version", action="append", metavar="VERSION",
                     help="rewrap only data keys under this master key version (repeatable)")
    cmd.add_argument("--only-key", action="append", metavar="URI",
                     help="rewrap only data keys under any version of this source key, e.g. the "
                     "old CMK's key id URI (repeatable; combines with --only-version)")
    cmd.add_argument("--key-vault", metavar="PREFIX",
                     help="move the values' data keys into this key vault: OUTPUT's values name "
                     "them (3x smaller); headers only, nothing re-encrypted")  # fmt: skip
    cmd.add_argument("--self-contained", action="store_true",
                     help="move a --key-vault dataset out of its vault: OUTPUT's values carry "
                     "their wrapped keys again; headers only")  # fmt: skip
    cmd.add_argument("--dry-run", action="store_true",
                     help="count data keys and KMS calls; change nothing")
    cmd.add_argument("--verify", action="store_true", help="decrypt all of OUTPUT afterwards")
    cmd.add_argument("--verify-sample", type=fraction, metavar="F",
                     help="decrypt an evenly spread fraction F (0 < F <= 1) of OUTPUT's records "
                     "afterwards, e.g. 0.01")
    cmd.add_argument("--trust-manifest", action="store_true",
                     help="take the target's version from the input's rotation manifest (same "
                     "--to-key) instead of asking the key source: no KMS call when nothing "
                     "needs to move, but a key rotated since is missed")
    cmd.add_argument("--overwrite", action="store_true", help="replace kmsbeam output in OUTPUT")
    add_budget_argument(cmd)  # dead letters allowed before the exit code is 3
    add_require_key_argument(cmd)  # strict: values under other master keys are not moved
    cmd.add_argument("--break-lock", action="store_true",
                     help="take over the lock of a rotation of the same OUTPUT that died (its pid "
                     "is gone from this host, or the lock is older than "
                     "KMSBEAM_ROTATION_LOCK_STALE_HOURS, default 24)")  # fmt: skip
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary table")
    cmd.add_argument("--progress-every", type=positive_number, metavar="SECONDS",
                     help="off a terminal, write a progress line every SECONDS (default 30)")
    add_kms_budget_arguments(cmd)

