"""The command line's argument types and the option groups several commands share.

No Beam import: the CLI builds its parser before Beam loads. ``kmsbeam.pipelines.cli`` and
every command's parser (``rotate.cmd``, ``export``, ``cat``) take their types from here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from kmsbeam import ConfigurationError

__all__ = [
    "add_key_lifetime_arguments", "add_kms_budget_arguments", "add_require_key_argument",
    "context_items", "fraction", "names", "positive_int", "positive_number", "price",
]  # fmt: skip


def names(text: str) -> list[str]:
    """``a, b.c`` -> ``["a", "b.c"]``."""
    return [n.strip() for n in text.split(",") if n.strip()]


def context_items(items: list[str] | None) -> dict[str, str] | None:
    """``--context NAME=VALUE`` (repeatable) as a dict; None when not given."""
    if items is None:
        return None
    context: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ConfigurationError(f"--context takes NAME=VALUE, not {item.split('=')[0]!r}...")
        context[name] = value
    return context


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check it; else "expected ``expected``"."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}")
        return value

    return parse


positive_int: Callable[[str], int] = _checked(int, lambda v: v >= 1, "a positive whole number")
positive_number: Callable[[str], float] = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
price: Callable[[str], float] = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a price of at least 0")
fraction: Callable[[str], float] = _checked(float, lambda v: 0 < v <= 1, "a fraction 0 < F <= 1, e.g. 0.01")


def add_kms_budget_arguments(parser: Any, side: str | None = None) -> None:
    """``--kms-qps`` and ``--kms-price-per-10k`` (encrypt, decrypt, export, rotate), and the
    key lifetimes of ``side`` (``encrypt``, ``decrypt``, or None for both)."""
    group = parser.add_argument_group("KMS call budget and cost")
    group.add_argument("--kms-qps", type=positive_number, metavar="N",
                       help="at most N remote KMS calls per second per worker process (retries "
                       "count); the fleet makes up to workers x N")  # fmt: skip
    group.add_argument("--kms-price-per-10k", type=price, metavar="PRICE",
                       help="KMS price per 10,000 calls for the summary's cost estimate (default "
                       "$KMSBEAM_KMS_PRICE_PER_10K, else USD 0.03)")  # fmt: skip
    add_key_lifetime_arguments(parser, side)


def add_key_lifetime_arguments(parser: Any, side: str | None = None) -> None:
    """``--key-cache-ttl`` (decrypting) and ``--data-key-max-age`` (encrypting): the revocation
    latency (docs/SECURITY.md); ``side`` None adds both."""
    group = parser.add_argument_group("revocation latency (how soon a disabled key stops the job)")
    if side != "encrypt":
        group.add_argument("--key-cache-ttl", type=positive_number, metavar="SECONDS",
                           help="reuse an unwrapped data key for at most SECONDS per worker "
                           "process (default 60)")  # fmt: skip
    if side != "decrypt":
        group.add_argument("--data-key-max-age", type=positive_number, metavar="SECONDS",
                           help="encrypt under one data key for at most SECONDS (default 300)")
    parser.set_defaults(key_cache_ttl=None, data_key_max_age=None)


def add_require_key_argument(parser: Any) -> None:
    """``--require-key KEYID[,KEYID]``: strict decryption (``kmsbeam.keys.strict``)."""
    parser.add_argument("--require-key", type=names, action="extend", metavar="KEYID[,KEYID]",
                        help="strict mode: refuse values wrapped under any other master key "
                        "(key URIs, or key ids/aliases of the job's key source); refused "
                        "values go to the dead letters as 'key not allowed'")  # fmt: skip
