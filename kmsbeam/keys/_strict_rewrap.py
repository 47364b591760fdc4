"""Strict rotation: a rewrap checks each *old* wrapped key against a ``KeyRequirement`` first.

``RequiredRewrapSource`` is a rotation's target source that refuses to rewrap a data key
wrapped under a master key the job does not require (no call for it); ``strict_rewrap`` runs a
``Rewrapper`` over records with each record checked first. Public through
``kmsbeam.keys.strict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kmsbeam.formats.base import outcomes
from kmsbeam.formats.paths import FieldPath
from kmsbeam.formats.values import rewrap_paths
from kmsbeam.keys.source import DataKey, KeyInfo, KeySource

if TYPE_CHECKING:
    from kmsbeam.keys.strict import KeyRequirement

__all__ = ["RequiredRewrapSource", "strict_rewrap"]


class RequiredRewrapSource:
    """A rotation's target source whose ``rewrap`` first checks the *old* wrapped key against
    a ``KeyRequirement`` (no call for a refused one); everything else goes to ``source``
    unchanged, under the same URI (so data-key caches are shared with it)."""

    def __init__(self, source: KeySource, requirement: KeyRequirement) -> None:
        self._source = source
        self.requirement = requirement

    def __repr__(self) -> str:
        return f"RequiredRewrapSource({self._source.uri!r}, {self.requirement!r})"

    @property
    def uri(self) -> str:
        return self._source.uri

    @property
    def kind(self) -> int:
        return self._source.kind

    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        return self._source.generate_data_key(context)

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        return self._source.decrypt_data_key(wrapped, context)

    def rewrap(self, wrapped: bytes, context: Mapping[str, str] | None = None,
               new_context: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
        self.requirement.check(wrapped)
        return self._source.rewrap(wrapped, context, new_context)

    def describe_key(self) -> KeyInfo:
        return self._source.describe_key()

    @property
    def created(self) -> bool:
        return self._source.created

    def wrapped_key_version(self, wrapped: bytes) -> str:
        return self._source.wrapped_key_version(wrapped)

    def current_version(self) -> str:
        return self._source.current_version()

    def key_versions(self) -> tuple[str, ...]:
        return self._source.key_versions()


def strict_rewrap(
    rewrapper: Any, requirement: KeyRequirement, paths: Sequence[FieldPath], fmt: int, target: str
) -> tuple[Callable[[Mapping[str, Any]], dict[str, Any]], Callable[[Sequence[Mapping[str, Any]]], list[Any]]]:
    """``(rewrap one record, rewrap a batch)`` of a ``Rewrapper`` with each record checked
    first (``check_record``; values already under ``target`` pass): the batch form returns the
    record or its ``KmsBeamError`` (``kmsbeam.formats.base.outcomes``)."""

    def one(record: Mapping[str, Any]) -> dict[str, Any]:
        requirement.check_record(record, paths, fmt, also=target)
        return rewrap_paths(record, paths, fmt, rewrapper)

    def batch(records: Sequence[Mapping[str, Any]]) -> list[Any]:
        return outcomes(one, records)

    return one, batch
