"""RAM-style access policies for emulator access keys.

A policy document is JSON like Alibaba Cloud RAM's::

    {"Version": "1", "Statement": [
      {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Describe*"],
       "Resource": "acs:kms:*:*:key/*",
       "Condition": {"StringEquals": {"kms:tag/team": "ingest"}}},
      {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}

- ``Action``: ``kms:NAME`` patterns (case-insensitive; ``*`` and ``?`` wildcards).
- ``Resource``: ARN patterns (case-sensitive; wildcards): ``acs:kms:REGION:ACCOUNT:key/ID``,
  ``acs:kms:REGION:ACCOUNT:alias/NAME``, and the containers ``acs:kms:REGION:ACCOUNT:key``
  (CreateKey, ListKeys) and ``acs:kms:REGION:ACCOUNT:alias`` (ListAliases). As in Alibaba's
  RAM guide (2019), CreateAlias needs the alias and the key, UpdateAlias the alias, its
  current key and the new key, DeleteAlias the alias and its key.
- ``Condition``: ``{OPERATOR: {KEY: value or [values]}}``; operators StringEquals,
  StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike,
  StringNotLike, IpAddress, NotIpAddress, Bool, DateEquals, DateNotEquals, DateLessThan,
  DateLessThanEquals, DateGreaterThan, DateGreaterThanEquals (ISO 8601 values such as
  ``2026-12-31T23:59:59Z`` or ``...+08:00``; no offset means UTC); keys ``kms:tag/TAGKEY``
  (the key's tag), ``acs:SourceIp``, ``acs:SecureTransport`` (always ``false``: the emulator
  speaks HTTP) and ``acs:CurrentTime`` (the server's clock when the call is served).
  Operators and keys are ANDed, the values of one key ORed; a negated operator is true when
  the key has no value (an untagged key), the others false.

Evaluation: an explicit Deny that matches wins; otherwise an Allow must match; otherwise the
call is denied. A malformed document fails when the policy is built, never per request.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsbeam.errors import ConfigurationError

__all__ = ["Policy"]

_DATES: dict[str, Callable[[float, float], bool]] = {
    "DateEquals": lambda a, b: a == b, "DateNotEquals": lambda a, b: a == b,
    "DateLessThan": lambda a, b: a < b, "DateLessThanEquals": lambda a, b: a <= b,
    "DateGreaterThan": lambda a, b: a > b, "DateGreaterThanEquals": lambda a, b: a >= b,
}  # fmt: skip
_OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike", "IpAddress", "NotIpAddress", "Bool", *_DATES,
}  # fmt: skip
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NotIpAddress",
            "DateNotEquals"}  # fmt: skip
_FIXED_KEYS = {"acs:sourceip": "acs:SourceIp", "acs:securetransport": "acs:SecureTransport",
               "acs:currenttime": "acs:CurrentTime"}  # fmt: skip
_STATEMENT_FIELDS = {"Sid", "Effect", "Action", "Resource", "Condition"}

Facts = Callable[[str], str | None]  # condition key (canonical spelling) -> value


def date_seconds(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date or time (UTC unless it has an offset)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _glob(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


def _strings(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigurationError(f"a policy {what} is a string or a non-empty list of strings")
    return items


class _Condition:
    def __init__(self, operator: str, key: str, values: list[str]) -> None:
        self.operator = operator
        self.key = key
        self.values = values
        self.negated = operator in _NEGATED
        if operator in ("IpAddress", "NotIpAddress"):
            try:
                self.networks = [ipaddress.ip_network(v, strict=False) for v in values]
            except ValueError as exc:
                raise ConfigurationError(f"{operator} takes IP addresses or CIDRs") from exc
        if operator in ("StringLike", "StringNotLike"):
            self.globs = [_glob(v, ignore_case=False) for v in values]
        if operator in _DATES:
            dates = [date_seconds(v) for v in values]
            if any(d is None for d in dates):
                raise ConfigurationError(
                    f"{operator} takes ISO 8601 times like 2026-12-31T23:59:59Z"
                )
            self.dates = [d for d in dates if d is not None]

    def holds(self, facts: Facts) -> bool:
        value = facts(self.key)
        if value is None:
            return self.negated
        op = self.operator
        if op in ("StringEquals", "StringNotEquals"):
            hit = value in self.values
        elif op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
            hit = value.casefold() in {v.casefold() for v in self.values}
        elif op in ("StringLike", "StringNotLike"):
            hit = any(g.fullmatch(value) for g in self.globs)
        elif op == "Bool":
            hit = value.lower() in {v.lower() for v in self.values}
        elif op in _DATES:
            when = date_seconds(value)
            hit = when is not None and any(_DATES[op](when, d) for d in self.dates)
        else:
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                hit = False
            else:
                hit = any(address in n for n in self.networks)
        return hit != self.negated


def _conditions(raw: Any) -> list[_Condition]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigurationError("a policy Condition is an object {OPERATOR: {KEY: VALUES}}")
    out = []
    for operator, block in raw.items():
        if operator not in _OPERATORS:
            raise ConfigurationError(
                f"policy condition operator {operator!r} is not supported; use one of "
                + ", ".join(sorted(_OPERATORS))
            )
        if not isinstance(block, dict) or not block:
            raise ConfigurationError(f"policy condition {operator} takes {{KEY: VALUES}}")
        for key, values in block.items():
            out.append(_Condition(operator, _condition_key(key), _strings(values, "value")))
    return out


def _condition_key(key: Any) -> str:
    if isinstance(key, str):
        if key.lower().startswith("kms:tag/") and len(key) > len("kms:tag/"):
            return "kms:tag/" + key[len("kms:tag/") :]
        if key.lower() in _FIXED_KEYS:
            return _FIXED_KEYS[key.lower()]
    raise ConfigurationError(
        f"policy condition key {key!r} is not supported; use kms:tag/TAGKEY, acs:SourceIp, "
        "acs:SecureTransport or acs:CurrentTime"
    )


class _Statement:
    def __init__(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigurationError("a policy Statement is a list of objects")
        unknown = set(raw) - _STATEMENT_FIELDS
        if unknown:
            raise ConfigurationError(f"unsupported policy statement field(s): {sorted(unknown)}")
        if raw.get("Effect") not in ("Allow", "Deny"):
            raise ConfigurationError("a policy statement's Effect is Allow or Deny")
        self.allow = raw["Effect"] == "Allow"
        actions = _strings(raw.get("Action"), "Action")
        if any(a != "*" and not a.lower().startswith("kms:") for a in actions):
            raise ConfigurationError("policy actions look like kms:GenerateDataKey or kms:*")
        self.actions = [_glob(a, ignore_case=True) for a in actions]
        resources = _strings(raw.get("Resource"), "Resource")
        self.resources = [_glob(r, ignore_case=False) for r in resources]
        self.conditions = _conditions(raw.get("Condition"))

    def matches(self, action: str, resources: Sequence[str], facts: Facts) -> bool:
        return (
            any(a.fullmatch(action) for a in self.actions)
            and any(p.fullmatch(r) for p in self.resources for r in resources)
            and all(c.holds(facts) for c in self.conditions)
        )


class Policy:
    """A parsed, validated policy document (see the module docstring for the grammar).

    Args:
        document: the JSON text or the parsed document.

    Raises:
        ConfigurationError: the document is not valid JSON or uses unsupported features.
    """

    def __init__(self, document: Mapping[str, Any] | str) -> None:
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except ValueError as exc:
                raise ConfigurationError(f"a policy is JSON: {exc.args[0]}") from None
        if not isinstance(document, Mapping):
            raise ConfigurationError("a policy is a JSON object with a Statement list")
        if set(document) - {"Version", "Statement"}:
            raise ConfigurationError("a policy has only Version and Statement")
        if document.get("Version", "1") != "1":
            raise ConfigurationError('a policy\'s Version is "1"')
        statements = document.get("Statement")
        if not isinstance(statements, list):
            raise ConfigurationError("a policy needs a Statement list")
        self._statements = [_Statement(s) for s in statements]
        self.document: dict[str, Any] = json.loads(json.dumps(dict(document)))
        self.needs_tags = any(
            c.key.startswith("kms:tag/") for s in self._statements for c in s.conditions
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read a policy document from a JSON file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            message = f"cannot read the policy file {path}: {exc.strerror}"
            raise ConfigurationError(message) from None
        try:
            return cls(text)
        except ConfigurationError as exc:
            raise ConfigurationError(f"the policy file {path}: {exc}") from None

    def __repr__(self) -> str:
        return f"Policy({len(self._statements)} statements)"

    def decide(self, action: str, resources: Sequence[str], facts: Facts) -> bool | None:
        """``False`` on an explicit Deny, ``True`` on an Allow, ``None`` if nothing matched.

        Args:
            action: ``kms:NAME``.
            resources: the ARNs naming one target (a key and, if it was named so, its alias).
            facts: the value of a condition key, or ``None`` if it has none.
        """
        allowed: bool | None = None
        for statement in self._statements:
            if statement.matches(action, resources, facts):
                if not statement.allow:
                    return False
                allowed = True
        return allowed
