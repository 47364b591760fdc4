"""Alibaba Cloud KMS parameter rules: aliases, descriptions, key specs, rotation, tags, dates.

Each check raises ``ConfigurationError`` with code ``InvalidParameter`` for a bad value and
``TypeError`` for a value of the wrong Python type. ``unsupported`` is for a valid request
this key cannot serve (code ``UnsupportedOperation``, as Alibaba's common error list).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Mapping

from kmsbeam.errors import ConfigurationError
from kmsbeam.keys.source import canonical_context

__all__ = [
    "MAX_TAGS",
    "bad",
    "check_alias",
    "check_description",
    "check_key_options",
    "check_tag_keys",
    "check_tags",
    "context_bytes",
    "interval_seconds",
    "iso",
    "parse_iso",
    "unsupported",
]

_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_\-]{1,255}$")
_INTERVAL = re.compile(r"^(\d{1,12})([dhms])$")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MIN_ROTATION, MAX_ROTATION = 7 * 86400, 365 * 86400

ORIGINS = ("Aliyun_KMS", "EXTERNAL")
PROTECTION_LEVELS = ("SOFTWARE", "HSM")
#: Alibaba specs the engine knows but does not implement (asymmetric, SM4, shorter AES)
OTHER_SPECS = (
    "Aliyun_AES_128", "Aliyun_AES_192", "Aliyun_SM4", "RSA_2048", "RSA_3072", "RSA_4096",
    "EC_P256", "EC_P256K", "EC_SM2",
)  # fmt: skip

_TAG = re.compile(r"^[A-Za-z0-9/\\_\-.+=:@]*$")
MAX_TAGS = 20
MAX_TAG_LENGTH = 128


def bad(message: str) -> ConfigurationError:
    return ConfigurationError(message, code="InvalidParameter")


def unsupported(message: str) -> ConfigurationError:
    return ConfigurationError(message, code="UnsupportedOperation")


def check_alias(alias_name: str) -> None:
    """``alias/NAME``: 1-255 of ``A-Z a-z 0-9 / _ -`` (Alibaba's rule); ``alias/acs`` is reserved."""
    if not isinstance(alias_name, str):
        raise TypeError("an alias name is a str")
    if not _ALIAS.match(alias_name) or alias_name.startswith("alias/acs"):
        raise bad("an alias is alias/NAME (1-255 of A-Z a-z 0-9 / _ -; not alias/acs...)")


def check_description(description: str) -> None:
    if not isinstance(description, str):
        raise TypeError("a description is a str")
    if len(description) > 8192:
        raise bad("a description is at most 8192 characters")


def check_key_options(origin: str, protection_level: str, key_spec: str, key_usage: str) -> None:
    """``CreateKey``'s Origin, ProtectionLevel, KeySpec and KeyUsage (values case-sensitive).

    Only ``Aliyun_AES_256`` keys for ``ENCRYPT/DECRYPT`` are implemented; other Alibaba
    specs are refused with a message that says so. ``HSM`` is accepted as a label: the
    engine keeps every key in its file either way.
    """
    for name, value in (
        ("origin", origin),
        ("protection_level", protection_level),
        ("key_spec", key_spec),
        ("key_usage", key_usage),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{name} is a str")
    if origin not in ORIGINS:
        raise bad(f"Origin must be one of {', '.join(ORIGINS)}")
    if protection_level not in PROTECTION_LEVELS:
        raise bad(f"ProtectionLevel must be one of {', '.join(PROTECTION_LEVELS)}")
    if key_spec in OTHER_SPECS:
        raise bad(
            f"KeySpec {key_spec} is not implemented by the kmsbeam engine; use Aliyun_AES_256"
        )
    if key_spec != "Aliyun_AES_256":
        raise bad("KeySpec must be Aliyun_AES_256")
    if key_usage != "ENCRYPT/DECRYPT":
        raise bad("KeyUsage of an Aliyun_AES_256 key must be ENCRYPT/DECRYPT")


def interval_seconds(interval: str) -> int:
    """Seconds in a RotationInterval (``integer[unit]``, unit d/h/m/s), 7 to 365 days."""
    if not isinstance(interval, str):
        raise TypeError("a rotation interval is a str such as '30d' or '604800s'")
    match = _INTERVAL.match(interval)
    seconds = int(match[1]) * _UNIT[match[2]] if match else 0
    if not MIN_ROTATION <= seconds <= MAX_ROTATION:
        raise bad("RotationInterval must be 7 to 365 days, written like '30d' or '604800s'")
    return seconds


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags to set: keys 1-128 and values 0-128 of ``A-Z a-z 0-9 / \\ _ - . + = : @``;
    keys must not start with ``acs:`` or ``aliyun``; at most 20 per request."""
    if not isinstance(tags, Mapping):
        raise TypeError("tags are a mapping of str to str")
    if not tags:
        raise bad("Tags must name at least one tag")
    if len(tags) > MAX_TAGS:
        raise bad(f"a key has at most {MAX_TAGS} tags")
    for key, value in tags.items():
        _check_tag_key(key)
        if not isinstance(value, str):
            raise TypeError("a tag value is a str")
        if len(value) > MAX_TAG_LENGTH or not _TAG.match(value):
            raise bad(f"the value of tag {key} must be 0-128 of A-Z a-z 0-9 / \\ _ - . + = : @")
    return dict(tags)


def check_tag_keys(tag_keys: Iterable[str]) -> list[str]:
    """Tag keys to remove (each 1-128 characters; unknown keys are ignored by the engine)."""
    if isinstance(tag_keys, str) or not isinstance(tag_keys, Iterable):
        raise TypeError("tag_keys is a sequence of str")
    keys = list(tag_keys)
    if not keys:
        raise bad("TagKeys must name at least one tag key")
    for key in keys:
        if not isinstance(key, str):
            raise TypeError("a tag key is a str")
        if not 1 <= len(key) <= MAX_TAG_LENGTH:
            raise bad("a tag key is 1 to 128 characters")
    return keys


def _check_tag_key(key: str) -> None:
    if not isinstance(key, str):
        raise TypeError("a tag key is a str")
    if not 1 <= len(key) <= MAX_TAG_LENGTH or not _TAG.match(key):
        raise bad("a tag key is 1-128 of A-Z a-z 0-9 / \\ _ - . + = : @")
    if key.startswith(("acs:", "aliyun")):
        raise bad("a tag key must not start with acs: or aliyun")


def context_bytes(context: Mapping[str, str] | None) -> bytes:
    """The canonical encryption context (AAD), bad keys mapped to ``InvalidParameter``."""
    try:
        return canonical_context(context)
    except ConfigurationError as exc:
        raise bad(str(exc)) from exc


def iso(seconds: float) -> str:
    """ISO 8601 UTC to the second, as Alibaba writes dates: ``2026-11-23T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_iso(text: str) -> int:
    """Seconds since the epoch of an ``iso`` date."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
