"""Alibaba Cloud KMS parameter rules: alias names, descriptions, rotation, dates, contexts.

Each check raises ``ConfigurationError`` with code ``InvalidParameter`` for a bad value and
``TypeError`` for a value of the wrong Python type.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from kmsbeam.errors import ConfigurationError
from kmsbeam.keysource import canonical_context

__all__ = ["bad", "check_alias", "check_description", "context_bytes", "iso", "rotation_fields"]

_ALIAS = re.compile(r"^alias/[A-Za-z0-9:/_\-]{1,255}$")
_INTERVAL = re.compile(r"^(\d{1,9})([sd])$")


def bad(message: str) -> ConfigurationError:
    return ConfigurationError(message, code="InvalidParameter")


def check_alias(alias_name: str) -> None:
    """``alias/NAME``: 1-255 of ``A-Z a-z 0-9 : / _ -``; ``alias/acs`` is reserved."""
    if not isinstance(alias_name, str):
        raise TypeError("an alias name is a str")
    if not _ALIAS.match(alias_name) or alias_name.startswith("alias/acs"):
        raise bad("an alias is alias/NAME (1-255 of A-Z a-z 0-9 : / _ -; not alias/acs...)")


def check_description(description: str) -> None:
    if not isinstance(description, str):
        raise TypeError("a description is a str")
    if len(description) > 8192:
        raise bad("a description is at most 8192 characters")


def rotation_fields(interval: str | None, now: float) -> dict[str, str]:
    """The automatic-rotation columns for ``interval`` (``"30d"``, ``"604800s"`` or None)."""
    if interval is None:
        return {"automatic_rotation": "Disabled", "rotation_interval": "", "next_rotation_date": ""}
    match = _INTERVAL.match(interval) if isinstance(interval, str) else None
    seconds = int(match[1]) * (86400 if match[2] == "d" else 1) if match else 0
    if not 7 * 86400 <= seconds <= 730 * 86400:
        raise bad("RotationInterval must be 7 to 730 days, e.g. '30d' or '604800s'")
    return {
        "automatic_rotation": "Enabled",
        "rotation_interval": f"{seconds}s",
        "next_rotation_date": iso(now + seconds),
    }


def context_bytes(context: Mapping[str, str] | None) -> bytes:
    """The canonical encryption context (AAD), bad keys mapped to ``InvalidParameter``."""
    try:
        return canonical_context(context)
    except ConfigurationError as exc:
        raise bad(str(exc)) from exc


def iso(seconds: float) -> str:
    """ISO 8601 UTC to the second, as Alibaba writes dates: ``2026-11-23T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
