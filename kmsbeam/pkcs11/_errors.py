"""PKCS#11 exceptions mapped to kmsbeam errors at the boundary (``raise ... from exc``).

=========================================  =================================================
PKCS#11 (python-pkcs11 exception)          kmsbeam error
=========================================  =================================================
module cannot be loaded                    ``ConfigurationError`` (check module-path)
no token with the label                    ``KeyNotFoundError`` (lists the labels it saw)
token or user PIN not initialised          ``ConfigurationError`` (initialise the token)
PinIncorrect, PinLocked, PinExpired, ...   ``AccessDeniedError`` (check the pin-source)
NoSuchKey / MultipleObjectsReturned (URI)  ``KeyNotFoundError`` / ``ConfigurationError``
KEY_FUNCTION_NOT_PERMITTED                 ``AccessDeniedError`` (the KEK may not wrap)
MechanismInvalid                           ``ConfigurationError`` (the module lacks one)
Device*, SessionCount, TokenNotPresent     ``KeySourceUnavailableError`` (retryable)
unwrap of modified bytes (WrappedKey*,     ``AuthenticationError`` (fixed message)
  GeneralError from C_UnwrapKey)
anything else                              ``KeySourceError`` naming the PKCS#11 error class
=========================================  =================================================

Messages name what to check (module path, token label, PIN *source*, KEK label); never a PIN.
"""

from __future__ import annotations

import re

import pkcs11.exceptions as px

from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyNotFoundError,
    KeySourceError,
    KeySourceUnavailableError,
    KmsBeamError,
)
from kmsbeam.pkcs11._config import Pkcs11Config

__all__ = [
    "STARTUP_TRANSIENT",
    "STALE_HANDLE",
    "UNWRAP_FAILED",
    "hsm_error",
    "invalid",
    "is_function_not_permitted",
    "kek_error",
    "login_error",
]

#: errors a worker can see while another process half-writes the token files (retried)
STARTUP_TRANSIENT: tuple[type[BaseException], ...] = (
    px.GeneralError,
    px.FunctionFailed,
    px.NoSuchToken,
    px.TokenNotRecognised,
    px.TokenNotPresent,
    px.UserPinNotInitialized,
    px.DeviceError,
    px.DeviceMemory,
    px.DeviceRemoved,
    px.SessionCount,
)
#: a cached object or session handle went stale (object destroyed, token re-initialised)
STALE_HANDLE: tuple[type[BaseException], ...] = (
    px.ObjectHandleInvalid,
    px.KeyHandleInvalid,
    px.WrappingKeyHandleInvalid,
    px.UnwrappingKeyHandleInvalid,
    px.SessionHandleInvalid,
    px.SessionClosed,
    px.UserNotLoggedIn,
)
#: what C_UnwrapKey says about bytes that do not unwrap (SoftHSM: GeneralError)
UNWRAP_FAILED: tuple[type[BaseException], ...] = (
    px.WrappedKeyInvalid,
    px.WrappedKeyLenRange,
    px.EncryptedDataInvalid,
    px.EncryptedDataLenRange,
    px.DataInvalid,
    px.DataLenRange,
    px.GeneralError,
)
_UNAVAILABLE = (
    px.DeviceError,
    px.DeviceMemory,
    px.DeviceRemoved,
    px.TokenNotPresent,
    px.SessionCount,
    px.HostMemory,
    px.FunctionCancelled,
)
_CKR_KEY_FUNCTION_NOT_PERMITTED = 0x68


def invalid(code: str = "InvalidCiphertext") -> AuthenticationError:
    """The opaque error for a wrapped key that does not unwrap (``code`` says why, for logs)."""
    return AuthenticationError(code=f"Pkcs11.{code}")


def is_function_not_permitted(exc: BaseException) -> bool:
    """python-pkcs11 0.10 leaves CKR_KEY_FUNCTION_NOT_PERMITTED unmapped ("... 0x68")."""
    match = re.search(r"0x([0-9a-fA-F]+)", str(exc)) if type(exc) is px.PKCS11Error else None
    return match is not None and int(match.group(1), 16) == _CKR_KEY_FUNCTION_NOT_PERMITTED


def login_error(exc: BaseException, token: str, pin_source: str) -> KmsBeamError:
    """A C_Login failure, naming the token and the PIN source (never the PIN)."""
    where = f"token {token!r} (PIN from {pin_source})"
    if isinstance(exc, px.PinIncorrect):
        return AccessDeniedError(f"wrong PIN for {where}: check the PIN source", code="PinIncorrect")
    if isinstance(exc, px.PinLocked):
        return AccessDeniedError(
            f"the user PIN of {where} is locked: the token's security officer must reset it",
            code="PinLocked",
        )
    if isinstance(exc, (px.PinExpired, px.PinInvalid, px.PinLenRange)):
        return AccessDeniedError(
            f"the PIN for {where} is not accepted ({type(exc).__name__}): check the PIN source",
            code=type(exc).__name__,
        )
    if isinstance(exc, px.UserPinNotInitialized):
        return ConfigurationError(
            f"the user PIN of token {token!r} is not initialised: initialise it (softhsm2-util "
            "--init-token ... --pin, or pkcs11-tool --init-pin) before using the token",
            code="UserPinNotInitialized",
        )
    return hsm_error(exc, f"logging in to {where}")


def kek_error(exc: BaseException, config: Pkcs11Config, doing: str) -> KmsBeamError:
    """A PKCS#11 failure while ``doing`` something with the KEK of ``config``: no such KEK,
    several matching ones, or what ``hsm_error`` says."""
    if isinstance(exc, px.NoSuchKey):
        return KeyNotFoundError(
            f"no {config.kek_name()} in {config.module_path}: create it with "
            f"`kmsbeam keys create --key '{config.uri}'`",
            code="KekNotFound",
        )
    if isinstance(exc, px.MultipleObjectsReturned):
        return ConfigurationError(
            f"several secret keys match the {config.kek_name()}: add id= (CKA_ID, as "
            "pkcs11-tool --list-objects shows it) to the key URI"
        )
    return hsm_error(exc, f"{doing} with the {config.kek_name()}")


def hsm_error(exc: BaseException, doing: str) -> KmsBeamError:
    """Any other PKCS#11 failure while ``doing`` something (a short phrase)."""
    name = type(exc).__name__
    if isinstance(exc, KmsBeamError):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return KeySourceUnavailableError(
            f"the HSM is unavailable while {doing} ({name}); retry later", code=name
        )
    if isinstance(exc, px.MechanismInvalid):
        return ConfigurationError(
            f"the PKCS#11 module lacks a mechanism kmsbeam needs while {doing} "
            "(CKM_GENERIC_SECRET_KEY_GEN, CKM_SHA256_HMAC and CKM_AES_KEY_WRAP)",
            code=name,
        )
    if is_function_not_permitted(exc):
        return AccessDeniedError(
            f"the HSM does not permit this use of the key while {doing} "
            "(CKR_KEY_FUNCTION_NOT_PERMITTED): a KEK needs CKA_WRAP and CKA_UNWRAP",
            code="KeyFunctionNotPermitted",
        )
    if isinstance(exc, (px.UserNotLoggedIn, px.PinExpired)):
        return AccessDeniedError(f"not logged in to the token while {doing} ({name})", code=name)
    return KeySourceError(f"the HSM failed while {doing} ({name})", code=name)
