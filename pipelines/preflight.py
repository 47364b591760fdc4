"""Checks made before a job's pipeline starts, on a sample of its input (exit 2, nothing written).

A mistake that would send every record to the dead letters is found here, in one sentence:

- ``encrypt --fields``/``--bind`` naming a field that none of the first ``SAMPLE`` records has
  (JSONL; CSV headers and Parquet schemas are checked whole by ``plan``);
- ``decrypt`` of fields or records that hold no kmsbeam values in the sample (a dataset that
  was never encrypted, or ``--fields`` naming cleartext fields); the value headers are parsed,
  no KMS call is made;
- ``decrypt --context`` that differs from the context the dataset's manifest recorded (the
  manifest holds the context in clear, so the check compares entries; the message names the
  entries that differ, never a value).

Key-source problems are not found here by calling the KMS (that would add billed calls and
change the KMS call counts a job reports): the plan opens the key (``DescribeKey`` on encrypt),
and a key-source failure during the job fails it (exit 1) with nothing left behind
(``cleanup``). A wrong ``--context`` or key on a dataset without a manifest sends every record
to the dead letters, and the job exits 3 saying so (``dead_letters.outcome``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kmsbeam import ConfigurationError, FieldPath, KmsBeamError
from kmsbeam.pipelines.samples import MISSING, SAMPLE, sample_records
from kmsbeam.pipelines.samples import get as _get

__all__ = ["SAMPLE", "check", "check_context", "check_credentials"]


def check_context(given: Mapping[str, str] | None, recorded: Mapping[str, str]) -> None:
    """``decrypt --context``: it must be the context the manifest recorded (or be left out)."""
    if given is None or dict(given) == dict(recorded):
        return
    differ = sorted(set(given) ^ set(recorded) | {k for k in given if k in recorded and given[k] != recorded[k]})
    raise ConfigurationError(
        f"--context differs from the context the dataset was encrypted with (per its manifest) "
        f"in {', '.join(repr(k) for k in differ)}; leave --context out to use the manifest's"
    )


_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature",
                    "InvalidSecurityToken", "InvalidCredentials")  # fmt: skip


def check_credentials(key: str, exc: KmsBeamError) -> None:
    """A key source's refusal while the plan describes the key: credentials it does not know
    (an unknown access key, a wrong secret, none found) are the caller's mistake, exit 2; a
    missing permission (least privilege: ``Forbidden.NoPermission`` to describe) is not, and
    the job finds out whether it may generate data keys."""
    code = str(getattr(exc, "code", None) or "")
    if code.startswith(_BAD_CREDENTIALS) or "credentials were found" in str(exc):
        raise ConfigurationError(
            f"the key source of {key} refused the credentials ({code or 'none found'}); check "
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (or your credential profile)"
        )


def _present(records: Sequence[Any], name: str) -> bool:
    path = FieldPath(name)
    return any(_get(r, path) is not MISSING for r in records)


def _shown(records: Sequence[Any]) -> str:
    names = sorted({k for r in records if isinstance(r, Mapping) for k in r})
    more = f", ... ({len(names)} in all)" if len(names) > 12 else ""
    return ", ".join(names[:12]) + more


def _is_kmsbeam(value: Any, fmt: int) -> bool:
    from kmsbeam.formats.envelope import parse

    try:
        parse(value, fmt, vault=True)
    except (KmsBeamError, TypeError, ValueError):
        return False
    return True


def _check_encrypted(plan: Any, records: Sequence[Any]) -> None:
    from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, V2_OF

    m = plan.manifest
    names = list(m.fields) if m.mode == "fields" else [m.payload_field]
    fmt = FIELD_V1 if m.mode == "fields" else RECORD_V1
    values = [v for name in names for r in records
              if (v := _get(r, FieldPath(name))) is not MISSING and v is not None]  # fmt: skip
    if values and not any(_is_kmsbeam(v, fmt) for v in values):
        raise ConfigurationError(
            f"the fields {', '.join(names)} of the first {len(records):,} records of {plan.spec.input} hold no "
            "kmsbeam encrypted values: this input was not written by kmsbeam encrypt (or these "
            "fields were not encrypted); decrypt the directory kmsbeam encrypt wrote"
        )
    if not m.key_vault and any(_is_kmsbeam(v, V2_OF[fmt]) for v in values):
        raise ConfigurationError(
            f"the values of {plan.spec.input} name their data keys in a key vault, and none was "
            "given: add --key-vault PREFIX (the vault the dataset was encrypted with)"
        )
    if m.key_vault:
        _check_vault(plan, values, fmt, len(records))


def _check_vault(plan: Any, values: Sequence[Any], fmt: int, n: int) -> None:
    """A few data keys the sample names must be in the vault: a wrong vault (another
    dataset's, a stale copy) stops here, not after a run that dead-letters every record."""
    from kmsbeam.formats.envelope import V2, parse
    from kmsbeam.pipelines.vaults import vault_for

    ids: list[bytes] = []
    for value in values:
        try:
            parsed = parse(value, fmt, vault=True)
        except (KmsBeamError, TypeError, ValueError):
            continue
        if parsed.fmt in V2 and parsed.commitment not in ids:
            ids.append(parsed.commitment)
            if len(ids) == 4:
                break
    vault = vault_for(plan.manifest.key_vault)
    if ids and not any(vault.generations(kid) for kid in ids):
        given = "given by --key-vault" if plan.spec.key_vault else "named by the dataset's manifest"
        raise ConfigurationError(
            f"none of the data keys the first {n:,} records of {plan.spec.input} name is in the key "
            f"vault {vault.uri} ({given}): give the vault the dataset was encrypted with, "
            "--key-vault PREFIX (a dataset moved with its vault needs it too)"
        )


def check(plan: Any) -> None:
    """Check a field or record job (``plan.Plan``) against a sample of its input.

    Raises:
        ConfigurationError: one sentence saying what to fix (the CLI exits 2).
    """
    m = plan.manifest
    if m.mode not in ("fields", "record"):
        return
    records = sample_records(plan.files, m.format)
    if not records:
        return
    if plan.spec.action == "encrypt":
        if m.format != "jsonl":  # CSV headers and Parquet schemas are checked whole by plan
            return
        for name in [*m.fields, *m.bind]:
            if not _present(records, name):
                flag = "--fields" if name in m.fields else "--bind"
                raise ConfigurationError(
                    f"none of the first {len(records):,} records of {plan.spec.input} has the field "
                    f"{name!r}; check {flag} (the records have {_shown(records)})"
                )
        return
    names = list(m.fields) + list(m.bind) if m.mode == "fields" else [m.payload_field]
    for name in names:
        if not _present(records, name):
            raise ConfigurationError(
                f"none of the first {len(records):,} records of {plan.spec.input} has the field "
                f"{name!r} (the records have {_shown(records)}); name the encrypted fields with --fields"
            )
    _check_encrypted(plan, records)
