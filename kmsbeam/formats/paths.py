"""Dotted field paths into nested dict records: ``"contact.email"``.

Reads never change the record; writes copy each dict along the path first, so the caller's
record (which a Beam runner may hand to other consumers too) is never mutated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kmsbeam.errors import ConfigurationError, RecordError

__all__ = ["FieldPath", "Paths", "parse_paths"]

_MISSING = object()


class FieldPath:
    """A parsed dotted path. ``name`` is the canonical text bound into the AAD."""

    __slots__ = ("name", "parts")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError("a field path is a str such as 'contact.email'")
        parts = tuple(name.split("."))
        if not name or any(not p for p in parts):
            raise ConfigurationError(f"bad field path {name!r}: use names joined by '.'")
        self.name = name
        self.parts = parts

    def __repr__(self) -> str:
        return f"FieldPath({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldPath) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def overlaps(self, other: FieldPath) -> bool:
        """True when one path is the other or lies inside it."""
        n = min(len(self.parts), len(other.parts))
        return self.parts[:n] == other.parts[:n]

    def get(self, record: Mapping[str, Any]) -> Any:
        """The value at this path. Raises RecordError when any step is missing."""
        node: Any = record
        for part in self.parts:
            if type(node) is dict:  # the common case, without the Mapping ABC check
                node = node.get(part, _MISSING)
            else:
                node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
            if node is _MISSING:
                raise RecordError(f"missing field: {self.name}")
        return node

    def set(self, record: dict[str, Any], value: Any) -> None:
        """Set the value in ``record`` (a copy the caller owns), copying nested dicts."""
        node = record
        for part in self.parts[:-1]:
            child = dict(node[part])
            node[part] = child
            node = child
        node[self.parts[-1]] = value


Paths = Iterable[str | FieldPath] | str
"""Dotted paths: a list of names or ``FieldPath``s, or one comma-separated string."""


def parse_paths(names: Paths, what: str = "fields") -> tuple[FieldPath, ...]:
    """Parse a list of paths (or one comma-separated string; parsed paths are taken as they
    are); refuse duplicates and overlaps."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    paths = tuple(n if isinstance(n, FieldPath) else FieldPath(n) for n in names)
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            if a.overlaps(b):
                raise ConfigurationError(f"{what} {a.name!r} and {b.name!r} overlap")
    return paths
