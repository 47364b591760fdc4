"""The Python version kmsbeam claims is the one it needs and is checked against (issue 14, 6).

``requires-python``, the classifiers and mypy's ``python_version`` name one minimum, so
``mypy --strict`` (tests/test_typing.py) flags any stdlib API newer than what pip allows; and
the code's known 3.11-only calls are below that minimum's reach.
"""

from __future__ import annotations

import ast
import binascii
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# (stdlib call, keyword) -> the first Python version that accepts it
NEWER_KEYWORDS = {("a2b_base64", "strict_mode"): (3, 11)}


def minimum() -> tuple[int, int]:
    spec = PYPROJECT["project"]["requires-python"]
    match = re.fullmatch(r">=\s*3\.(\d+)", spec)
    assert match, f"requires-python should be a plain minimum such as '>=3.11', not {spec!r}"
    return 3, int(match.group(1))


def test_requires_python_classifiers_and_mypy_agree() -> None:
    low = minimum()
    assert low == (3, 11)  # the machine and CI run 3.11
    versions = {tuple(map(int, c.rsplit(" ", 1)[1].split(".")))
                for c in PYPROJECT["project"]["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}  # fmt: skip
    assert min(versions) == low, "the lowest version classifier must be requires-python's"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"{low[0]}.{low[1]}", (
        "mypy must check against the minimum Python (it then flags newer stdlib APIs)"
    )
    assert sys.version_info[:2] >= low


def test_the_code_needs_no_more_than_the_minimum() -> None:
    used: dict[str, tuple[int, int]] = {}
    for folder in ("kmsbeam", "transforms", "pipelines"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                for kw in node.keywords:
                    version = NEWER_KEYWORDS.get((name, kw.arg or ""))
                    if version is not None:
                        used[f"{path.relative_to(ROOT)}:{node.lineno} {name}({kw.arg}=)"] = version
    too_new = {where: v for where, v in used.items() if v > minimum()}
    assert not too_new, f"needs a newer Python than requires-python allows: {too_new}"


def test_strict_base64_is_what_the_minimum_offers() -> None:
    assert binascii.a2b_base64(b"AAAA", strict_mode=True) == b"\0\0\0"
    with pytest.raises(binascii.Error):
        binascii.a2b_base64(b"AA=A", strict_mode=True)
