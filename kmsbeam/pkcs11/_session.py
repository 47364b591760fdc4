"""Per-process PKCS#11 sessions: one login and one session per token, under its module's lock.

python-pkcs11 is not thread-safe with SoftHSM, login is per process (closing a session logs
the whole process out), and nothing pickles. So every process keeps, per module path, one
``Module`` (``_library``: the initialised library and a lock held around every PKCS#11 call)
and, per token, one ``TokenSession`` (one logged-in R/W session and the KEK handles found on
it), shared by every ``Pkcs11KeySource`` and DoFn instance of the process.

- fork: the child's sessions log in again on first use, on the child's own ``Module``; the
  parent's sessions are never used or closed there.
- start-up: many workers starting at once can read a token file another process is writing
  (GeneralError, NoSuchToken, UserPinNotInitialized). Opening retries a bounded number of
  times (``STARTUP_DELAYS``), re-initialising the library in between (a token list is read
  at C_Initialize); a wrong PIN is never retried (an HSM may lock the PIN).
- re-initialising bumps ``Module.generation``: every session of the module re-opens lazily,
  reading its PIN source again (PINs are never kept, only a keyed digest to compare).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions as px

from kmsbeam.errors import AccessDeniedError, ConfigurationError, KeyNotFoundError, KmsBeamError
from kmsbeam.pkcs11._config import Pkcs11Config
from kmsbeam.pkcs11._errors import STALE_HANDLE, STARTUP_TRANSIENT, login_error
from kmsbeam.pkcs11._library import Module, module_of

__all__ = ["STARTUP_DELAYS", "TokenSession", "attach"]

T = TypeVar("T")
#: sleeps between start-up attempts (jittered up to +50%): 5 attempts, ~0.15-0.23 s in all
STARTUP_DELAYS = (0.01, 0.02, 0.04, 0.08)
_PIN_KEY = os.urandom(32)  # keys the PIN digests; process memory only


class _TokenMissing(Exception):
    def __init__(self, seen: list[str], uninitialised: list[int]) -> None:
        super().__init__("token not found")
        self.seen, self.uninitialised = seen, uninitialised


_RETRIED: tuple[type[BaseException], ...] = (_TokenMissing, *STARTUP_TRANSIENT)


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


def _find_token(lib: Any, config: Pkcs11Config) -> Any:
    seen: list[str] = []
    uninitialised: list[int] = []
    matches = []
    for slot in lib.get_slots(token_present=True):
        if config.slot_id is not None and slot.slot_id != config.slot_id:
            continue
        token = slot.get_token()
        if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            uninitialised.append(slot.slot_id)
        elif token.label == config.token:
            matches.append(token)
        else:
            seen.append(token.label)
    if len(matches) > 1:
        raise ConfigurationError(
            f"{len(matches)} tokens are labelled {config.token!r} in {config.module_path}: "
            "add slot-id= to the key URI"
        )
    if not matches:
        raise _TokenMissing(seen, uninitialised)
    return matches[0]


def _missing_token_error(config: Pkcs11Config, exc: _TokenMissing) -> KmsBeamError:
    if config.slot_id is not None and config.slot_id in exc.uninitialised:
        return ConfigurationError(
            f"the token in slot {config.slot_id} of {config.module_path} is not initialised: "
            "initialise it (softhsm2-util --init-token, or the HSM's tools) or fix slot-id",
            code="TokenNotInitialized",
        )
    seen = ", ".join(repr(s) for s in exc.seen) or "none"
    hint = f"; {len(exc.uninitialised)} uninitialised token(s)" if exc.uninitialised else ""
    where = f" in slot {config.slot_id}" if config.slot_id is not None else ""
    return KeyNotFoundError(
        f"no initialised token labelled {config.token!r}{where} in {config.module_path} "
        f"(tokens seen: {seen}{hint}): check token= and the module's configuration",
        code="TokenNotFound",
    )


class TokenSession:
    """The logged-in session of one token in this process. Use through ``run``."""

    def __init__(self, module: Module, slot_id: int, label: str) -> None:
        self.module = module  # this process's: ``locked`` moves an inherited session to it
        self.slot_id = slot_id
        self.label = label
        self._session: Any = None
        self._generation = -1
        self._config: Pkcs11Config | None = None
        self._pin_digest = b""
        self._keys: dict[tuple[str | None, bytes | None], Any] = {}

    def forget(self) -> None:
        """Drop the session and handles (the library was re-initialised; no C_Logout)."""
        self._session = None
        self._keys.clear()

    def _live(self) -> bool:
        return self._session is not None and self._generation == self.module.generation

    def _login(self, token: Any, pin: str, config: Pkcs11Config) -> None:
        self.module.calls["C_OpenSession+C_Login"] += 1
        try:
            self._session = token.open(rw=True, user_pin=pin)
        except px.UserAlreadyLoggedIn:
            # login is per process: a new session of a logged-in process is logged in too
            if self._pin_digest:
                self.check_pin(pin, config)
            self._session = token.open(rw=True)
        self._generation = self.module.generation
        self._config = config
        self._pin_digest = _pin_digest(pin)
        self._keys.clear()

    def check_pin(self, pin: str, config: Pkcs11Config) -> None:
        """Refuse a PIN other than the one this process logged in with (login is per process)."""
        if not hmac.compare_digest(_pin_digest(pin), self._pin_digest):
            raise AccessDeniedError(
                f"wrong PIN for token {config.token!r} (PIN from {config.pin_source}): this "
                "process is logged in to the token with another PIN; check the PIN source",
                code="PinIncorrect",
            )

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """Hold the module lock with a live session (re-opened if the library was reset, or
        on this process's module if the session was inherited through fork)."""
        mine = module_of(self.module.path)
        if mine is not self.module:  # the parent's: never use its session or handles
            self.module, self._session = mine, None
            self._keys.clear()
            with mine.lock:
                mine.tokens.setdefault(self.slot_id, self)
        with self.module.lock:
            if not self._live():
                assert self._config is not None
                _open(self.module, self._config, self._config.pin_source.read(), self)
            yield self._session

    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(session)`` under the lock; once more after a stale handle (object or session)."""
        for attempt in (0, 1):
            with self.locked() as session:
                try:
                    return fn(session)
                except STALE_HANDLE as exc:
                    if attempt:
                        raise
                    self._keys.clear()
                    if isinstance(exc, (px.SessionHandleInvalid, px.SessionClosed, px.UserNotLoggedIn)):
                        self._session = None
        raise AssertionError("unreachable")

    def key(self, session: Any, label: str | None, key_id: bytes | None) -> Any:
        """The secret key with this label and/or id (cached; caller holds the lock).

        Raises:
            pkcs11.exceptions.NoSuchKey, MultipleObjectsReturned: as python-pkcs11 does.
        """
        cache_key = (label, key_id)
        key = self._keys.get(cache_key)
        if key is None:
            search: dict[Any, Any] = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY}
            if label is not None:
                search[pkcs11.Attribute.LABEL] = label
            if key_id is not None:
                search[pkcs11.Attribute.ID] = key_id
            self.module.calls["C_FindObjects"] += 1
            # list() runs the search to C_FindObjectsFinal: python-pkcs11's get_key leaves it
            # active on MultipleObjectsReturned, and the session then refuses every call.
            found = list(session.get_objects(search))
            if len(found) != 1:
                raise px.NoSuchKey() if not found else px.MultipleObjectsReturned()
            key = self._keys[cache_key] = found[0]
        return key

    def count(self, name: str, n: int = 1) -> None:
        """Count ``n`` PKCS#11 operations (caller holds the lock)."""
        self.module.calls[name] += n

    def close(self) -> None:
        """C_Logout and C_CloseSession (caller holds the lock)."""
        session, self._session = self._session, None
        self._keys.clear()
        if session is not None:
            try:
                session.close()
            except px.PKCS11Error:
                pass


def _open(module: Module, config: Pkcs11Config, pin: str, existing: TokenSession | None) -> TokenSession:
    """Find the token and log in, with bounded retries (caller holds ``module.lock``)."""
    last: BaseException | None = None
    for attempt in range(len(STARTUP_DELAYS) + 1):
        if attempt:
            module.calls["startup_retries"] += 1
            delay = STARTUP_DELAYS[attempt - 1]
            time.sleep(delay * (1 + random.random() / 2))
        try:
            if attempt:
                module.reinitialize()
            lib = module.library()
            module.calls["C_GetSlotList"] += 1
            token = _find_token(lib, config)
            slot_id = token.slot.slot_id
            session = existing if existing is not None else module.tokens.get(slot_id)
            if session is None:
                session = module.tokens[slot_id] = TokenSession(module, slot_id, token.label)
            if session._live():
                session.check_pin(pin, config)
            else:
                session._login(token, pin, config)
            return session
        except _RETRIED as exc:
            last = exc
        except KmsBeamError:
            raise
        except px.PKCS11Error as exc:
            raise login_error(exc, config.token, str(config.pin_source)) from exc
    if isinstance(last, _TokenMissing):
        raise _missing_token_error(config, last) from None
    assert last is not None
    raise login_error(last, config.token, str(config.pin_source)) from last


def attach(config: Pkcs11Config) -> TokenSession:
    """This process's session for the URI's token, logging in with its PIN if needed.

    Raises:
        ConfigurationError: PIN source missing, module not loadable, token not initialised.
        KeyNotFoundError: no token with that label.
        AccessDeniedError: wrong or locked PIN.
        KeySourceUnavailableError: the HSM did not answer.
    """
    pin = config.pin_source.read()  # before any HSM call: a missing PIN fails fast
    module = module_of(config.module_path)
    with module.lock:
        return _open(module, config, pin, None)
