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
import time
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError, FormatError, KmsBeamError, failure_reason
from kmsbeam.formats.envelope import from_text
from kmsbeam.formats.objects import ObjectFormat, ObjectReader
from kmsbeam.oss import oss_client
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.export import EXPORT_MANIFEST, read_manifest
from kmsbeam.pipelines.rotate.rotator import Outcome, Verified, trusted_sources
from kmsbeam.pipelines.rotate.state import ROTATION_NAME, recorded_target, sample_indices
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.rotation.paths import rewrap_path
from kmsbeam.rotation.rewrap import Rewrapper

__all__ = ["ExportRotator"]


class ExportRotator:
    """An OSS export rotated in place: object metadata only (``kmsbeam.pipelines.rotate.rotator``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.location = args.input if args.input.endswith("/") else args.input + "/"
        manifest = read_manifest(self.location)
        if manifest is None:
            raise ConfigurationError(f"{self.location} holds no kmsbeam export manifest ({EXPORT_MANIFEST}); "
                                     "only exports rotate in place on oss:// (a dataset is rotated "
                                     "into an OUTPUT; PME datasets on local disk)")  # fmt: skip
        if args.reencrypt or args.only_version:
            raise ConfigurationError("--reencrypt and --only-version/--only-key do not combine with an "
                                     "in-place export rotation")  # fmt: skip
        self.manifest = manifest
        # the export manifest's key is data: a hint resolved against the caller's key sources
        self.to_key = args.to_key or trusted_sources(args).resolve(manifest.key)
        self.target = kmsbeam.open_key_source(self.to_key)
        self.client = oss_client()
        version = recorded_target(self._previous(), self.to_key) if args.trust_manifest else None
        self.version = version or Rewrapper(self.target).check_target()  # a disabled or unknown key stops us here
        self._rewrappers: dict[str, Rewrapper] = {}  # by the objects' context

    def files(self) -> list[str]:
        return [paths.join(self.location, entry["name"]) for entry in self.manifest.objects]

    def _previous(self) -> dict[str, Any] | None:
        """The export's rotation manifest, or None."""
        try:
            data = json.loads(self.client.get(paths.join(self.location, ROTATION_NAME)).decode("utf-8"))
        except (KmsBeamError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def dry_run(self) -> Outcome:
        return self._walk(dry_run=True)

    def rotate(self) -> Outcome:
        return self._walk(dry_run=False)

    def _walk(self, dry_run: bool) -> Outcome:
        counts = {"objects": 0, "rewrapped": 0, "skipped": 0, "kms_calls_rewrap": 0, "copy_requests": 0}
        started = time.monotonic()
        moved: list[dict[str, str]] = []
        failures: list[dict[str, str]] = []
        for entry in self.manifest.objects:
            counts["objects"] += 1
            try:
                done = self._rotate_object(paths.join(self.location, entry["name"]), dry_run)
            except KmsBeamError as exc:  # counted and listed, never dropped; the others go on
                failures.append({"object": entry["name"], "reason": failure_reason(exc)})
                continue
            if done is None:
                counts["skipped"] += 1
                continue
            counts["rewrapped"] += 1
            if not dry_run:
                counts["kms_calls_rewrap"] += 1
                counts["copy_requests"] += 1
                moved.append({"object": entry["name"], "from": done, "to": self.version})
        counts["failed"] = len(failures)
        elapsed = time.monotonic() - started
        rotation: dict[str, Any] = {}
        if not dry_run:
            self.manifest.key = self.to_key
            self.client.put(paths.join(self.location, EXPORT_MANIFEST), self.manifest.to_json().encode("utf-8"))
            rotation = {"kmsbeam_rotation": 1, "method": "oss-metadata", "target_key": self.to_key,
                        "rewrap_path": rewrap_path(self.to_key).summary(),
                        "target_version": self.version, "data_keys": moved, "failures": failures,
                        "counts": counts, "object_bytes_transferred": 0,
                        "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
        warning = (f"{len(failures):,} objects could not be rotated (listed with the reason in "
                   f"{paths.join(self.location, ROTATION_NAME)}); run again when fixed") if failures else None
        title = f"kmsbeam rotate --in-place{' --dry-run' if dry_run else ''}: {self.location}"
        rows = [(k.replace("_", " "), f"{v:,}") for k, v in counts.items()]
        rows.append(("rewrap path", rewrap_path(self.to_key).summary()))
        return Outcome(title, rows + [("object bytes transferred", "0"), ("elapsed", f"{elapsed:.1f} s")],
                       rotation, warning, failed=bool(failures))  # fmt: skip

    def _rotate_object(self, url: str, dry_run: bool) -> str | None:
        """Rewrap one object's data key in its metadata; the old version, or None if it was
        already under the target version."""
        meta = dict(self.client.head(url).metadata or {})
        if "kmsbeam-wrapped-key" not in meta:
            raise FormatError("no kmsbeam object metadata")
        old = wrapped_key_version(from_text(meta["kmsbeam-wrapped-key"]))
        if old == self.version or dry_run:
            return None if old == self.version else old
        context = meta.get("kmsbeam-context", "")
        if context not in self._rewrappers:  # the rewrap checks the new key unwraps to K
            self._rewrappers[context] = Rewrapper(self.target, target_version=self.version,
                                                  context=json.loads(from_text(context).decode("utf-8")))  # fmt: skip
        self.client.copy(url, url, metadata=ObjectFormat().rewrap_metadata(meta, self._rewrappers[context]))
        return old

    def verify(self, fraction: float | None) -> Verified:
        """Decrypt every object (or an evenly spread ``fraction`` of them), discarding the output."""
        names = [entry["name"] for entry in self.manifest.objects]
        picked = [names[i] for i in sample_indices(len(names), fraction or 1.0)] if names else []
        result = {"objects_sampled": len(picked), "objects_decrypted": 0, "failed": 0, "bytes_read": 0}
        buf = bytearray(1 << 20)
        for name in picked:
            url = paths.join(self.location, name)
            try:
                info = self.client.head(url)
                raw = self.client.open_read(url, size=info.size)
                with ObjectReader(raw, self.to_key, context=self.manifest.context,
                                  metadata=info.metadata or {}, where=url) as reader:  # fmt: skip
                    while reader.readinto(buf):
                        pass
                result["objects_decrypted"] += 1
                result["bytes_read"] += info.size
            except KmsBeamError:
                result["failed"] += 1
        return Verified(result, [
            ("verified (decrypted)", f"{result['objects_decrypted']:,} of {result['objects_sampled']:,} "
             f"objects, {result['failed']:,} failed"),
            ("bytes read to verify", f"{result['bytes_read']:,}")], result["failed"])  # fmt: skip

    def write_rotation(self, text: str) -> None:
        self.client.put(paths.join(self.location, ROTATION_NAME), text.encode("utf-8"))
