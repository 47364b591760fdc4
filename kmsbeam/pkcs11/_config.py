"""The configuration of a ``pkcs11:`` key URI: the only part of a PKCS#11 source that pickles.

::

    pkcs11:token=LABEL;object=KEK[;id=%01%02]?module-path=/abs/lib.so&pin-source=env:VAR

============  ==============================================================================
attribute     meaning
============  ==============================================================================
token         the token label (CKA_LABEL of the token), required
object        the KEK label (CKA_LABEL); ``object`` and/or ``id`` is required
id            the KEK id (CKA_ID), percent-encoded bytes as in RFC 7512 (``%01%a2``)
slot-id       optional: the slot number, when several tokens share a label
module-path   required: absolute path of the PKCS#11 module (``libsofthsm2.so``, vendor lib)
pin-source    required: ``env:VAR`` (an environment variable) or ``file:/abs/path`` (a file
              whose first line is the PIN, mode 0600 or 0400, owned by the user or root:
              group or others must not read it). The PIN itself never goes in a URI: ``pin-value``
              is refused, and nothing here ever holds or prints a PIN.
============  ==============================================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from kmsbeam._private_files import check_secret_file
from kmsbeam.errors import ConfigurationError
from kmsbeam.keys.uri import KeyUri, parse_key_uri

__all__ = ["PinSource", "Pkcs11Config"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_LABEL = 32  # CK_TOKEN_INFO.label is 32 bytes
_EXAMPLE = (
    "pkcs11:token=LABEL;object=KEK?module-path=/usr/lib/softhsm/libsofthsm2.so"
    "&pin-source=env:KMSBEAM_PKCS11_PIN"
)


@dataclass(frozen=True)
class PinSource:
    """Where the user PIN is read from: ``env:VAR`` or ``file:/abs/path`` (never the PIN)."""

    kind: str
    where: str

    @classmethod
    def parse(cls, text: str) -> PinSource:
        kind, sep, where = text.partition(":")
        if sep and kind == "env" and _ENV_NAME.match(where):
            return cls("env", where)
        if sep and kind == "file":
            path = where[2:] if where.startswith("//") else where  # file:///abs and file:/abs
            if path.startswith("/"):
                return cls("file", path)
            raise ConfigurationError("pin-source=file: needs an absolute path, e.g. file:/etc/hsm/pin")
        raise ConfigurationError(
            "pin-source must be env:VARIABLE or file:/absolute/path (the PIN itself never goes "
            "in a key URI)"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"

    def read(self) -> str:
        """Read the PIN. The caller passes it to C_Login and drops it.

        Raises:
            ConfigurationError: the variable is unset or empty, or the file is missing,
                unreadable or empty, or group or others may read or write it, or it is owned
                by someone other than the user or root (the message names the source, never
                its content).
        """
        if self.kind == "env":
            pin = os.environ.get(self.where)
            if pin is None:
                raise ConfigurationError(
                    f"the PIN source env:{self.where} is not set: export {self.where} in the "
                    "environment of every process (and Beam worker) that opens this key"
                )
        else:
            try:
                with open(self.where, encoding="utf-8") as f:
                    check_secret_file(f.fileno(), self.where, "the PIN file")
                    pin = f.readline().rstrip("\r\n")
            except FileNotFoundError:
                raise ConfigurationError(
                    f"the PIN file {self.where} (pin-source) does not exist on this machine"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"cannot read the PIN file {self.where} (pin-source): {type(exc).__name__}"
                ) from None
        if not pin:
            raise ConfigurationError(f"the PIN source {self} is empty")
        return pin


@dataclass(frozen=True)
class Pkcs11Config:
    """A validated ``pkcs11:`` key URI. Picklable; holds no secret.

    Attributes:
        uri: the key URI as given (used as the source's identity and cache key).
        module_path: absolute path of the PKCS#11 module.
        token: the token label.
        label: the KEK label, or ``None`` if the URI names the KEK by id only.
        key_id: the KEK id bytes, or ``None``.
        slot_id: the slot number, or ``None``.
        pin_source: where the PIN comes from.
    """

    uri: str
    module_path: str
    token: str
    label: str | None
    key_id: bytes | None
    slot_id: int | None
    pin_source: PinSource

    @classmethod
    def from_uri(cls, uri: str | KeyUri) -> Pkcs11Config:
        """Validate a ``pkcs11:`` URI (see the module docstring).

        Raises:
            ConfigurationError: not a pkcs11 URI, a missing or bad attribute, or a PIN in it.
        """
        parsed = uri if isinstance(uri, KeyUri) else parse_key_uri(uri)
        if parsed.scheme != "pkcs11":
            raise ConfigurationError(f"a PKCS#11 key source takes pkcs11: key URIs, not {parsed.scheme}:")
        names = {name for name, _ in parsed.params}
        if names & {"pin-value", "pin"}:
            raise ConfigurationError(
                "pkcs11 key URIs must not carry the PIN (pin-value); use pin-source=env:VAR or "
                "pin-source=file:/path"
            )
        module = parsed.param("module-path")
        if not module:
            raise ConfigurationError(f"pkcs11 key URIs need module-path=, e.g. {_EXAMPLE}")
        if not module.startswith("/"):
            raise ConfigurationError(
                f"module-path must be absolute (the same path on every worker), not {module!r}"
            )
        pin = parsed.param("pin-source")
        if not pin:
            raise ConfigurationError(f"pkcs11 key URIs need pin-source=env:VAR or file:PATH, e.g. {_EXAMPLE}")
        token = parsed.param("token") or ""
        if not token or len(token.encode("utf-8")) > _MAX_LABEL:
            raise ConfigurationError("token= must be a token label of 1 to 32 bytes")
        label = parsed.param("object") or None
        if label is not None and len(label.encode("utf-8")) > 255:
            raise ConfigurationError("object= (the KEK label) is limited to 255 bytes")
        key_id = _raw_id(parsed)
        if label is None and key_id is None:
            raise ConfigurationError("pkcs11 key URIs need object=LABEL or id=%XX... for the KEK")
        return cls(
            uri=parsed.raw or _canonical(parsed),
            module_path=module,
            token=token,
            label=label,
            key_id=key_id,
            slot_id=_slot(parsed.param("slot-id")),
            pin_source=PinSource.parse(pin),
        )

    def kek_name(self) -> str:
        """The KEK as a person would name it in a message."""
        parts = [f"label {self.label!r}"] if self.label is not None else []
        if self.key_id is not None:
            parts.append(f"id {self.key_id.hex()}")
        return f"KEK {' and '.join(parts)} on token {self.token!r}"


def _canonical(parsed: KeyUri) -> str:
    """A URI for a ``KeyUri`` built without its text (path attributes, then the query)."""
    path = [f"{k}={quote(v, safe='')}" for k, v in parsed.params if k in ("token", "object", "id", "slot-id")]
    query = [f"{k}={quote(v, safe=':/')}" for k, v in parsed.params if k in ("module-path", "pin-source")]
    return f"pkcs11:{';'.join(path)}?{'&'.join(query)}"


def _raw_id(parsed: KeyUri) -> bytes | None:
    """The ``id=`` attribute as bytes (``KeyUri`` decodes it as text, which loses bytes)."""
    if parsed.param("id") is None:
        return None
    path = parsed.raw.partition(":")[2].partition("?")[0] if parsed.raw else ""
    for part in path.split(";"):
        name, _, value = part.partition("=")
        if name == "id":
            key_id = unquote_to_bytes(value)
            break
    else:
        key_id = (parsed.param("id") or "").encode("utf-8")
    if not key_id or len(key_id) > 255:
        raise ConfigurationError("id= must be 1 to 255 percent-encoded bytes, e.g. id=%01%a2")
    return key_id


def _slot(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise ConfigurationError(f"slot-id must be a slot number, not {text!r}")
    return int(text)
