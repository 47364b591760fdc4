"""Rotating a key vault: every data key rewrapped to a new master key, no data file touched.

``rotate_vault(vault, to_source)`` adds generation n+1 to each entry whose newest generation is
not under the target's current version: one ``KeySource.rewrap`` (server-side ReEncrypt for
KMS sources, in-HSM for PKCS#11, AdvanceDecrypt + AdvanceEncrypt for a KMS 3.0 instance
gateway: ``kmsbeam.rotation.paths``) per data key, through ``kmsbeam.rotation.rewrap.Rewrapper``.
The vault is its own journal: each new generation is written under a fresh name (after the
highest listed) and synced once at the end, and readers skip an entry that is not whole, so
an interrupted rotation loses nothing (the older generations stay) and is resumed by running
it again, and a finished one makes no call the second time
(each newest entry already names the target version). ``verify`` reads each new entry back
from the store and unwraps it, checking its commitment against the key id (one more call per
data key). Readers fall back to older generations, so even an unverified bad entry cannot
lose a key while the old master key exists.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kmsbeam.errors import KmsBeamError
from kmsbeam.formats.base import ALREADY, REWRAPPED
from kmsbeam.keys.source import KeySource, canonical_context
from kmsbeam.reasons import failure_reason, fails_job
from kmsbeam.rotation.rewrap import Rewrapper
from kmsbeam.vault.entry import VaultEntry
from kmsbeam.vault.vault import KeyVault

__all__ = ["VaultRotation", "rotate_vault"]


@dataclass
class VaultRotation:
    """What ``rotate_vault`` did.

    Attributes:
        keys: data keys in the vault; ``rewrapped``, ``already`` (under the target version),
            ``filtered`` (not asked for: another key id or version) and ``failed`` (key id hex
            -> reason; also each ``only_keys`` id the vault does not hold) of them.
        calls: rewrap calls made to the target source; ``verify_calls``: unwrap calls of
            ``verify``.
        target_version: the target's version name, which the new entries record.
        seconds: wall time.
    """

    keys: int = 0
    rewrapped: int = 0
    already: int = 0
    filtered: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    verify_calls: int = 0
    target_version: str = ""
    seconds: float = 0.0


def rotate_vault(
    vault: KeyVault,
    to_source: KeySource,
    *,
    only_keys: Iterable[bytes] = (),
    only_versions: Iterable[str] = (),
    verify: bool = False,
    parallel: int = 8,
    on_key: Callable[[VaultRotation], None] | None = None,
) -> VaultRotation:
    """Rewrap every data key of ``vault`` (or those in ``only_keys`` / under ``only_versions``)
    to ``to_source``'s key, ``parallel`` data keys at a time (a remote KMS and object store
    answer in milliseconds: the calls overlap; ``--kms-qps`` style caps belong to the source).

    Raises:
        KmsBeamError: the target source failed as a whole (disabled, unreachable, denied:
            ``kmsbeam.reasons.fails_job``); keys done before stay done (run it again).
    """
    if parallel < 1:
        raise ValueError("parallel is at least 1")
    start = time.monotonic()
    out = VaultRotation(target_version=to_source.current_version())
    ids = vault.key_ids()
    wanted = set(only_keys)
    versions = set(only_versions)
    lock = threading.Lock()
    rewrappers: dict[bytes, Rewrapper] = {}

    def rewrapper(context: Mapping[str, str]) -> Rewrapper:
        ctx = canonical_context(context)
        with lock:
            rw = rewrappers.get(ctx)
            if rw is None:
                rw = rewrappers[ctx] = Rewrapper(to_source, context=context, verify=False,
                                                 target_version=out.target_version)  # fmt: skip
        return rw

    def one(kid: bytes) -> tuple[str, int, str]:
        """``(outcome, rewrap calls made, failure reason)`` of one data key."""
        entry = vault.newest(kid, ids[kid])  # the listing has the generations: no second list
        if entry is None:
            return "failed", 0, "no valid entry in the vault"
        if versions and entry.master_key_version not in versions:
            return "filtered", 0, ""
        wrapped, status = rewrapper(entry.context).rewrap_key(entry.wrapped, kid)
        calls = 1 if status == REWRAPPED else 0
        if status == ALREADY:
            return "already", calls, ""
        # after the highest generation listed, valid or not (a torn one is never reused)
        new = VaultEntry(kid, ids[kid][0] + 1, wrapped, to_source.uri, out.target_version,
                         entry.context)  # fmt: skip
        vault.put(new, durable=False)  # one sync at the end: older generations stay meanwhile
        if verify:
            _verify(vault, new, to_source)
        return "rewrapped", calls, ""

    def run(kid: bytes) -> None:
        try:
            outcome, calls, reason = one(kid)
        except KmsBeamError as exc:
            if fails_job(exc, "rewrap"):
                raise
            outcome, calls, reason = "failed", 0, failure_reason(exc)
        with lock:
            out.calls += calls
            out.verify_calls += 1 if verify and outcome == "rewrapped" else 0
            if outcome == "failed":
                out.failed[kid.hex()] = reason
            else:
                setattr(out, outcome, getattr(out, outcome) + 1)
            if on_key is not None:
                on_key(out)

    todo = [kid for kid in sorted(ids) if not wanted or kid in wanted]
    out.keys, out.filtered = len(ids), len(ids) - len(todo)  # keys not asked for are left
    for kid in sorted(wanted - set(ids)):
        out.failed[kid.hex()] = "no such data key in the vault"
    pool = ThreadPoolExecutor(max_workers=min(parallel, max(1, len(todo))))
    try:
        for done in [pool.submit(run, kid) for kid in todo]:
            done.result()  # the first job-failing error: the keys not started yet are not
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        vault.sync()
        out.seconds = time.monotonic() - start
    return out


def _verify(vault: KeyVault, new: VaultEntry, source: KeySource) -> None:
    """Read ``new`` back from the store and unwrap it: its key must have the entry's key id."""
    from kmsbeam.errors import AuthenticationError
    from kmsbeam.formats.envelope import KeyCipher

    stored = vault.read(new.key_id, new.generation)
    if stored is None or stored.wrapped != new.wrapped:
        raise AuthenticationError()
    cipher = KeyCipher.from_dek(source.decrypt_data_key(stored.wrapped, new.context))  # no cache: a check
    if not hmac.compare_digest(cipher.commitment, new.key_id):
        raise AuthenticationError()
