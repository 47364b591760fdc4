"""``kmsbeam rotate oss://bucket/export/ --in-place``: rewrap the data keys of an OSS export.

Each object of an export (object stream v1) has one data key, repeated in its user metadata
(``x-oss-meta-kmsbeam-wrapped-key``, which readers prefer over the header's). Rotation
replaces only that metadata with one server-side ``CopyObject`` of the object onto itself
(``x-oss-metadata-directive: REPLACE``): per object one HEAD, one rewrap, one check unwrap
and one copy request; no object byte passes through the client. The object's stored header
keeps the old wrapped key, which readers ignore once the metadata names another one.

Objects whose metadata already names the target's current key version are skipped, so a
second run makes no data-key call (with ``--trust-manifest``, which takes the target's version
from the export's rotation manifest, no KMS call at all); a run stopped half-way is resumed by
running it again: each object's metadata is its own journal. ``--verify`` (or
``--verify-sample F``) then reads and decrypts every (or a sample of the) object(s), discarding
the plaintext, and reports the bytes it had to download for that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import kmsbeam
from kmsbeam import (
    AuthenticationError,
    ConfigurationError,
    FormatError,
    KmsBeamError,
    failure_reason,
)
from kmsbeam.formats.envelope import from_text, key_commitment, to_text
from kmsbeam.pipelines.rotate.state import ROTATION_NAME, finished_at, recorded_target, sample_indices
from kmsbeam.rotation.rewrap import Rewrapper, wrapped_key_version

__all__ = ["rotate_export_in_place"]


def rotate_export_in_place(args: argparse.Namespace, table: Any) -> int:
    """The ``--in-place`` rotation of an export at ``args.input``; returns the exit code."""
    from kmsbeam.oss import oss_client
    from kmsbeam.pipelines.export import EXPORT_MANIFEST, _join, read_manifest

    location = args.input if args.input.endswith("/") else args.input + "/"
    manifest = read_manifest(location)
    if manifest is None:
        raise ConfigurationError(f"{location} holds no kmsbeam export manifest ({EXPORT_MANIFEST}); "
                                 "only exports rotate in place on oss:// (a dataset is rotated "
                                 "into an OUTPUT; PME datasets on local disk)")  # fmt: skip
    if args.reencrypt or args.only_version:
        raise ConfigurationError("--reencrypt and --only-version/--only-key do not combine with an "
                                 "in-place export rotation")  # fmt: skip
    from kmsbeam.pipelines.rotate.job import trusted_sources

    # the export manifest's key is data: a hint resolved against the caller's key sources
    to_key = args.to_key or trusted_sources(args).resolve(manifest.key)
    target = kmsbeam.open_key_source(to_key)
    client = oss_client()
    version = recorded_target(_previous(client, location), to_key) if args.trust_manifest else None
    if version is None:
        version = Rewrapper(target).check_target()  # a disabled or unknown key stops us here
    counts = {"objects": 0, "rewrapped": 0, "skipped": 0, "kms_calls_rewrap": 0, "copy_requests": 0}
    started = time.monotonic()
    moved: list[dict[str, str]] = []
    failures: list[dict[str, str]] = []
    for entry in manifest.objects:
        url = _join(location, entry["name"])
        counts["objects"] += 1
        try:
            done = _rotate_object(client, url, target, to_key, version, args.dry_run)
        except KmsBeamError as exc:  # counted and listed, never dropped; the others go on
            failures.append({"object": entry["name"], "reason": failure_reason(exc)})
            continue
        if done is None:
            counts["skipped"] += 1
            continue
        counts["rewrapped"] += 1
        if not args.dry_run:
            counts["kms_calls_rewrap"] += 1
            counts["copy_requests"] += 1
            moved.append({"object": entry["name"], "from": done, "to": version})
    counts["failed"] = len(failures)
    elapsed = time.monotonic() - started
    verified = None
    if (args.verify or args.verify_sample is not None) and not args.dry_run:
        verified = _verify(client, location, manifest, args.verify_sample, to_key)
    if not args.dry_run:
        manifest.key = to_key
        client.put(_join(location, EXPORT_MANIFEST), manifest.to_json().encode("utf-8"))
        rotation = {"kmsbeam_rotation": 1, "method": "oss-metadata", "target_key": to_key,
                    "target_version": version, "data_keys": moved, "failures": failures,
                    "counts": counts,
                    "object_bytes_transferred": 0, "elapsed_seconds": round(elapsed, 3),
                    "finished_at": finished_at()}  # fmt: skip
        if verified is not None:
            rotation["verify"] = verified
        client.put(_join(location, ROTATION_NAME),
                   (json.dumps(rotation, indent=2) + "\n").encode("utf-8"))  # fmt: skip
    if not args.quiet:
        title = f"kmsbeam rotate --in-place{' --dry-run' if args.dry_run else ''}: {location}"
        print(table(title, [(k.replace("_", " "), f"{v:,}") for k, v in counts.items()]
                    + [("object bytes transferred", "0"), ("elapsed", f"{elapsed:.1f} s")]
                    + ([] if verified is None else [
                        ("verified (decrypted)", f"{verified['objects_decrypted']:,} of "
                         f"{verified['objects_sampled']:,} objects, {verified['failed']:,} failed"),
                        ("bytes read to verify", f"{verified['bytes_read']:,}")])))  # fmt: skip
    if failures:
        print(f"kmsbeam: warning: {len(failures):,} objects could not be rotated (listed with the "
              f"reason in {_join(location, '_kmsbeam_rotation.json')}); run again when fixed",
              file=sys.stderr)  # fmt: skip
        return 1
    return 1 if verified is not None and verified["failed"] else 0


def _previous(client: Any, location: str) -> dict[str, Any] | None:
    """The export's rotation manifest, or None."""
    from kmsbeam.pipelines.export import _join

    try:
        data = json.loads(client.get(_join(location, ROTATION_NAME)).decode("utf-8"))
    except (KmsBeamError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _verify(client: Any, location: str, manifest: Any, fraction: float | None,
            key: str) -> dict[str, Any]:  # fmt: skip
    """Decrypt every object (or an evenly spread ``fraction`` of them), discarding the output."""
    from kmsbeam.formats.objects import ObjectReader
    from kmsbeam.pipelines.export import _join

    names = [entry["name"] for entry in manifest.objects]
    picked = [names[i] for i in sample_indices(len(names), fraction or 1.0)] if names else []
    result = {"objects_sampled": len(picked), "objects_decrypted": 0, "failed": 0, "bytes_read": 0}
    buf = bytearray(1 << 20)
    for name in picked:
        url = _join(location, name)
        try:
            info = client.head(url)
            raw = client.open_read(url, size=info.size)
            with ObjectReader(raw, key, context=manifest.context,
                              metadata=info.metadata or {}, where=url) as reader:  # fmt: skip
                while reader.readinto(buf):
                    pass
            result["objects_decrypted"] += 1
            result["bytes_read"] += info.size
        except KmsBeamError:
            result["failed"] += 1
    return result


def _rotate_object(client: Any, url: str, target: Any, to_key: str, version: str, dry_run: bool) -> str | None:
    """Rewrap one object's data key in its metadata; the old version, or None if it was
    already under ``version``."""
    meta = dict(client.head(url).metadata or {})
    if "kmsbeam-wrapped-key" not in meta:
        raise FormatError("no kmsbeam object metadata")
    wrapped = from_text(meta["kmsbeam-wrapped-key"])
    old = wrapped_key_version(wrapped)
    if old == version or dry_run:
        return None if old == version else old
    context = json.loads(from_text(meta["kmsbeam-context"]).decode("utf-8"))
    new = target.rewrap(wrapped, context)
    if key_commitment(target.decrypt_data_key(new, context)) != from_text(meta["kmsbeam-commitment"]):
        raise AuthenticationError()
    meta["kmsbeam-wrapped-key"] = to_text(new)
    if to_key.isascii():
        meta["kmsbeam-key"] = to_key
    client.copy(url, url, metadata=meta)
    return old
