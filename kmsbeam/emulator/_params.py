"""Request parameters as the official SDK sends them, read with Alibaba's validation errors.

The SDK puts every parameter in the query string (a few, like ``Recipient``, in a form body)
as text: booleans ``True``/``False``, numbers in decimal, maps (``EncryptionContext``) and
lists (``Tags``) as JSON. A parameter the action does not take is ``InvalidParameter``, a
required one that is absent ``MissingParameter``, a value that does not parse
``InvalidParameter`` (for ``CiphertextBlob``: ``InvalidCiphertext``, with no detail).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Container, Iterable, Mapping
from typing import Any

from kmsbeam.emulator._errors import ApiError, invalid_ciphertext

__all__ = ["Params", "invalid", "merge_parameters"]


def invalid(message: str) -> ApiError:
    return ApiError("InvalidParameter", message)


def merge_parameters(*sources: Iterable[tuple[str, str]]) -> dict[str, str]:
    """One map from the query and the form body; a name given twice is ``InvalidParameter``."""
    merged: dict[str, str] = {}
    for source in sources:
        for name, value in source:
            if name in merged:
                raise invalid(f"the parameter {name[:64]} is given more than once")
            merged[name] = value
    return merged


class Params:
    """The parameters of one call, checked against what its action takes."""

    def __init__(
        self, values: Mapping[str, str], allowed: Container[str], required: Iterable[str] = ()
    ) -> None:
        """``allowed`` names every parameter the action takes, ``required`` the ones it needs."""
        for name in values:
            if name not in allowed:
                raise invalid(f"the parameter {name[:64]} is not supported by this action")
        for name in required:
            if not values.get(name):
                raise ApiError("MissingParameter", f"the parameter {name} is required")
        self.values = dict(values)

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        return default if value is None else value

    def required(self, name: str) -> str:
        value = self.values.get(name)
        if not value:
            raise ApiError("MissingParameter", f"the parameter {name} is required")
        return value

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        value = self.values.get(name)
        options = list(choices)
        if value is not None and value not in options:
            raise invalid(f"{name} must be one of {', '.join(options)}")
        return value

    def integer(self, name: str, lo: int, hi: int) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        digits = value.removeprefix("-")
        if not (digits.isascii() and digits.isdecimal()) or not lo <= int(value) <= hi:
            raise invalid(f"{name} must be a whole number from {lo} to {hi}")
        return int(value)

    def boolean(self, name: str) -> bool | None:
        value = self.values.get(name)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise invalid(f"{name} must be true or false")
        return value.lower() == "true"

    def json_value(self, name: str) -> Any:
        value = self.values.get(name)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise invalid(f"{name} must be JSON") from None

    def context(self, name: str) -> dict[str, str] | None:
        """An encryption context: a JSON object of strings (``null`` or ``{}`` is none)."""
        value = self.json_value(name)
        if value is None or value == {}:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise invalid(f"{name} must be a JSON object whose values are strings")
        return value

    def blob(self, name: str = "CiphertextBlob") -> bytes:
        """A required base64 ciphertext blob; anything else is ``InvalidCiphertext``."""
        try:
            return base64.b64decode(self.required(name), validate=True)
        except (binascii.Error, ValueError):
            raise invalid_ciphertext() from None

    def base64(self, name: str) -> bytes:
        try:
            return base64.b64decode(self.required(name), validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{name} must be base64") from None

    def page(self) -> tuple[int, int]:
        """``PageNumber`` (default 1) and ``PageSize`` (default 10, at most 100)."""
        number = self.integer("PageNumber", 1, 1_000_000)
        size = self.integer("PageSize", 1, 100)
        return number or 1, size or 10

    def tags(self, name: str = "Tags") -> dict[str, str]:
        """``[{"TagKey": "k", "TagValue": "v"}, ...]`` as a dict."""
        value = self.json_value(name)
        ok = isinstance(value, list) and value and all(
            isinstance(t, dict) and set(t) <= {"TagKey", "TagValue"}
            and isinstance(t.get("TagKey"), str) and isinstance(t.get("TagValue", ""), str)
            for t in value
        )  # fmt: skip
        if not ok:
            raise invalid(f'{name} must be JSON like [{{"TagKey": "k", "TagValue": "v"}}]')
        return {t["TagKey"]: t.get("TagValue", "") for t in value}

    def tag_keys(self, name: str = "TagKeys") -> list[str]:
        """``["k1", "k2"]`` (JSON) or ``k1,k2``."""
        raw = self.required(name)
        try:
            value = json.loads(raw)
        except ValueError:
            value = [k.strip() for k in raw.split(",")]
        if not isinstance(value, list) or not value or not all(
            isinstance(k, str) and k for k in value
        ):
            raise invalid(f'{name} must be JSON like ["k1", "k2"]')
        return value
