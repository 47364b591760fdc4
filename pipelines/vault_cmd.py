"""``kmsbeam vault rotate|check|gc``: manage a key vault (``--key-vault`` datasets).

::

    kmsbeam vault rotate oss://lake/_keys/ --to-key alibaba-kms://cn-hangzhou/alias/pii-2026 [--verify]
    kmsbeam vault check oss://lake/enc/            # every data key the dataset names unwraps
    kmsbeam vault gc oss://lake/_keys/ --dataset oss://lake/enc/ [--dataset ...] [--yes]

``rotate`` reads and writes vault entries only (one rewrap call per data key, zero data
bytes); running it again resumes or does nothing. ``check`` reads the dataset's value headers
(``--sample N``: the first N records of each file) and unwraps each data key once. ``gc``
lists the entries none of the named datasets uses, and deletes them only with ``--yes``.
Exit codes: 0 all good; 1 some key failed (listed), or the key source failed; 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from kmsbeam import ConfigurationError
from kmsbeam.pipelines.options import positive_int

__all__ = ["add_vault_parser", "run_vault"]

_SHOWN = 20  # key ids listed by name; the rest are counted


def add_vault_parser(sub: Any) -> None:
    text = "rotate, check or clean up a key vault (datasets written with --key-vault)"
    vault = sub.add_parser("vault", help=text, description=text, allow_abbrev=False)
    cmds = vault.add_subparsers(dest="vault_command", metavar="COMMAND", required=True)
    rotate = cmds.add_parser("rotate", help="rewrap every data key in the vault to a new master "
                             "key (no data file is read or written)")  # fmt: skip
    rotate.add_argument("vault", metavar="VAULT", help="the key vault prefix (oss://bucket/_keys/, a directory)")
    rotate.add_argument("--to-key", required=True, metavar="URI", help="the new master key")
    rotate.add_argument("--only-key", action="append", metavar="KEYID",
                        help="rewrap only this data key id (32 hex digits; repeatable)")  # fmt: skip
    rotate.add_argument("--only-version", action="append", metavar="VERSION",
                        help="rewrap only data keys under this master key version (repeatable)")  # fmt: skip
    rotate.add_argument("--parallel", type=positive_int, default=8, metavar="N",
                        help="data keys rewrapped at a time (default 8): KMS and OSS calls overlap")  # fmt: skip
    rotate.add_argument("--verify", action="store_true",
                        help="read each new entry back and unwrap it (one more call per data key)")  # fmt: skip
    check = cmds.add_parser("check", help="prove every data key a dataset names is in its vault "
                            "and unwraps")  # fmt: skip
    check.add_argument("dataset", metavar="DATASET", help="a directory written by kmsbeam encrypt --key-vault")
    check.add_argument("--key-vault", metavar="PREFIX", help="the vault (default: the manifest's)")
    check.add_argument("--key", metavar="URI", help="the key to unwrap with (default: the manifest's, "
                       "if it is one of your configured key sources)")  # fmt: skip
    check.add_argument("--sample", type=int, metavar="N", help="read only the first N records of each file")
    gc = cmds.add_parser("gc", help="list (and with --yes delete) entries no named dataset uses")
    gc.add_argument("vault", metavar="VAULT", help="the key vault prefix")
    gc.add_argument("--dataset", action="append", required=True, metavar="DIR",
                    help="a dataset that uses the vault (repeatable: name every one)")  # fmt: skip
    gc.add_argument("--yes", action="store_true", help="delete the unused entries (cannot be undone; "
                    "every dataset that uses the vault must be named)")  # fmt: skip
    gc.add_argument("--min-age", type=non_negative, default=24.0, metavar="HOURS",
                    help="keep entries written less than HOURS ago (default 24: an encrypt job still "
                    "running has entries and no manifest yet)")  # fmt: skip


def non_negative(text: str) -> float:
    """An argparse type: a number of hours, 0 or more."""
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours (0 or more)")
    return value


def run_vault(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``kmsbeam vault ...``; returns the exit code."""
    out = out or sys.stdout
    if args.vault_command == "rotate":
        return _rotate(args, out)
    if args.vault_command == "check":
        return _check(args, out)
    return _gc(args, out)


def _rows(out: TextIO, title: str, rows: list[tuple[str, str]]) -> None:
    print(title, file=out)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=out)


def _listed(out: TextIO, what: str, items: dict[str, str]) -> None:
    for kid, reason in list(items.items())[:_SHOWN]:
        print(f"  {what} {kid}: {reason}", file=out)
    if len(items) > _SHOWN:
        print(f"  ... and {len(items) - _SHOWN:,} more", file=out)


def _rotate(args: argparse.Namespace, out: TextIO) -> int:
    from kmsbeam import open_key_source, parse_key_uri
    from kmsbeam.pipelines.vaults import require_vault, vault_for
    from kmsbeam.rotation.paths import rewrap_path
    from kmsbeam.vault import key_id_of
    from kmsbeam.vault.rotation import rotate_vault

    parse_key_uri(args.to_key)
    vault = require_vault(vault_for(args.vault))
    only = [key_id_of(k) for k in args.only_key or []]
    target = open_key_source(args.to_key, create=False)
    done = rotate_vault(vault, target, only_keys=only, only_versions=args.only_version or [],
                        verify=args.verify, parallel=args.parallel)  # fmt: skip
    _rows(out, f"kmsbeam vault rotate: {vault.uri} -> {args.to_key} (version {done.target_version})", [
        ("data keys", f"{done.keys:,}"),
        ("rewrapped", f"{done.rewrapped:,}"),
        ("already under the target", f"{done.already:,}"),
        ("left (not asked for)", f"{done.filtered:,}"),
        ("failed", f"{len(done.failed):,}"),
        ("rewrap path", rewrap_path(args.to_key).summary()),
        (f"KMS calls: {rewrap_path(args.to_key).calls}", f"{done.calls * rewrap_path(args.to_key).per_key:,}"),
        ("KMS calls: verify", f"{done.verify_calls:,}" if args.verify else "0 (no --verify)"),
        ("data bytes read / written", "0 / 0"),
        ("elapsed", f"{done.seconds:.2f} s"),
    ])  # fmt: skip
    _listed(out, "failed", done.failed)
    return 1 if done.failed else 0


def _dataset(directory: str, key_vault: str | None) -> tuple[str, Any, str]:
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.manifest import Manifest

    where = paths.normalize(directory, "the dataset").rstrip("/")
    manifest = Manifest.read(where)
    if manifest is None or manifest.mode not in ("fields", "record", "cells"):
        raise ConfigurationError(f"{where} is not a fields, record or cells dataset written by "
                                 "kmsbeam encrypt (no _kmsbeam.json of those modes)")  # fmt: skip
    vault = key_vault or manifest.key_vault
    if not vault:
        raise ConfigurationError(f"{where} keeps its data keys in its values (it was not written "
                                 "with --key-vault): it needs no vault")  # fmt: skip
    return where, manifest, vault


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from kmsbeam.keys.trust import TrustedKeySources
    from kmsbeam.pipelines.vaults import check_keys, dataset_key_ids, require_vault, vault_for

    if args.sample is not None and args.sample < 1:
        raise ConfigurationError("--sample takes a positive number of records")
    where, manifest, uri = _dataset(args.dataset, args.key_vault)
    vault = require_vault(vault_for(uri))
    trusted = TrustedKeySources.configured(args.key)
    source = trusted.open(args.key or manifest.key)
    found = dataset_key_ids(where, manifest, args.sample)
    bad = check_keys(vault, found.key_ids, source, manifest.context)
    _rows(out, f"kmsbeam vault check: {where} (vault {vault.uri})", [
        ("files read", f"{found.files:,}"),
        ("records read", f"{found.records:,}" + (f" (first {args.sample:,} per file)" if args.sample else "")),
        ("data keys named", f"{len(found.key_ids):,}"),
        ("data keys good", f"{len(found.key_ids) - len(bad):,}"),
        ("data keys failed", f"{len(bad):,}"),
        ("values with their own key (v1)", f"{found.self_contained:,}"),
        ("values not kmsbeam values", f"{found.malformed:,}"),
    ])  # fmt: skip
    _listed(out, "data key", {k.hex(): v for k, v in bad.items()})
    return 1 if bad or found.malformed else 0


def _gc(args: argparse.Namespace, out: TextIO) -> int:
    from kmsbeam.pipelines.vaults import dataset_key_ids, require_vault, vault_for

    vault = require_vault(vault_for(args.vault))
    used: set[bytes] = set()
    for directory in args.dataset:
        where, manifest, uri = _dataset(directory, None)
        if vault_for(uri) != vault:
            raise ConfigurationError(f"{where} keeps its data keys in {uri}, not in {vault.uri}")
        used |= set(dataset_key_ids(where, manifest).key_ids)
    held = vault.key_ids()
    unused = sorted(set(held) - used)
    young = {kid for kid in unused if _younger(vault, kid, held[kid], args.min_age)}
    doomed = [kid for kid in unused if kid not in young]
    missing = sorted(used - set(held))
    deleted = sum(vault.remove(kid) for kid in doomed) if args.yes and not missing else 0
    named = f"{len(args.dataset)} dataset{'s' if len(args.dataset) != 1 else ''}"
    _rows(out, f"kmsbeam vault gc: {vault.uri} ({named})", [
        ("data keys in the vault", f"{len(held):,}"),
        ("used by the datasets", f"{len(set(held) & used):,}"),
        ("used but missing from the vault", f"{len(missing):,}"),
        ("unused", f"{len(unused):,}"),
        (f"unused but younger than {args.min_age:g} h (kept)", f"{len(young):,}"),
        ("entries deleted", f"{deleted:,}" if args.yes else "0 (list only; --yes deletes)"),
    ])  # fmt: skip
    for kid in unused[:_SHOWN]:
        kept = " (younger than --min-age: kept)" if kid in young else ""
        print(f"  unused {kid.hex()} ({len(held[kid])} generation{'s' if len(held[kid]) != 1 else ''}){kept}",
              file=out)  # fmt: skip
    if len(unused) > _SHOWN:
        print(f"  ... and {len(unused) - _SHOWN:,} more", file=out)
    _listed(out, "missing", {kid.hex(): "used by a dataset named, not in the vault" for kid in missing})
    if missing and args.yes:
        print("  nothing was deleted: the vault lacks keys a named dataset uses (is it the right "
              "vault, or was it restored only in part?)", file=out)  # fmt: skip
    if doomed:
        print("  only the datasets named were searched: every other dataset that uses one of these "
              "keys " + ("has lost it" if deleted else "would become unreadable if they were deleted"),
              file=out)  # fmt: skip
    return 1 if missing else 0


def _younger(vault: Any, kid: bytes, generations: list[int], hours: float) -> bool:
    """Whether ``kid``'s first entry was written less than ``hours`` ago (an encrypt job
    still running writes its entries before its dataset's manifest exists); an unreadable
    entry counts as young (kept)."""
    from datetime import datetime, timezone

    try:
        first = vault.read(kid, min(generations))
    except Exception:
        return True
    if first is None:
        return True
    written = datetime.strptime(first.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - written).total_seconds() < hours * 3600
