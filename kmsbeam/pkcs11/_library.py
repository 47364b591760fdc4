"""Per-process PKCS#11 libraries: one ``Module`` per module path, its lock and its call counts.

A ``Module`` holds the initialised library and the lock held around every PKCS#11 call of the
process; its token sessions (``_session.TokenSession``) live in ``Module.tokens``.

- fork (``kmsbeam.process``): ``fork()`` waits for every module lock, so no PKCS#11 call is
  half-done in the child. The child makes its own ``Module``, which finalises the library
  state it inherited and initialises it again (C_Finalize, C_Initialize).
- exit: the registry closes each module of this process: it logs out and closes the sessions
  this process opened.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import pkcs11
import pkcs11.exceptions as px

from kmsbeam import process
from kmsbeam.errors import ConfigurationError

if TYPE_CHECKING:
    from kmsbeam.pkcs11._session import TokenSession

__all__ = ["Module", "call_counts", "finalize", "module_of", "reinitialize"]

# python-pkcs11 keeps a path's library for the interpreter's life (a forked child inherits it
# initialised): a module whose path is here finalises it before its first C_Initialize
_LOADED: set[str] = set()


class Module:
    """One PKCS#11 module in this process: the library, its lock and its token sessions."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.lib: Any = None
        self.generation = 0
        self.tokens: dict[int, TokenSession] = {}  # by slot id
        self.calls: Counter[str] = Counter()

    def library(self) -> Any:
        """The initialised library (caller holds ``lock``)."""
        if self.lib is None:
            if not os.path.isfile(self.path):
                raise ConfigurationError(f"no PKCS#11 module at {self.path}: check module-path")
            self.calls["C_Initialize"] += 1
            try:
                if self.generation == 0 and self.path in _LOADED:  # a parent's, or a dropped module's
                    finalize(pkcs11.lib(self.path))
                _LOADED.add(self.path)
                self.lib = pkcs11.lib(self.path)
            except px.PKCS11Error as exc:
                if str(exc).startswith(("OS exception", "Unknown exception")):
                    raise ConfigurationError(
                        f"cannot load {self.path} as a PKCS#11 module (check module-path): {exc}"
                    ) from exc
                raise  # C_Initialize failed: retried by the caller
        return self.lib

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize (caller holds ``lock``); every session re-opens."""
        self.generation += 1
        for session in self.tokens.values():
            session.forget()
        lib, self.lib = self.lib, None
        if lib is not None:
            finalize(lib)
            self.lib = self.library()

    def logout(self) -> None:
        """C_Logout and C_CloseSession of every session (at exit: ``kmsbeam.process``)."""
        if not self.lock.acquire(timeout=2):
            return
        try:
            for session in self.tokens.values():
                session.close()
        finally:
            self.lock.release()


def finalize(lib: Any) -> None:
    """C_Finalize, whatever state the library is in."""
    try:
        lib.finalize()
    except px.PKCS11Error:
        pass  # state inherited through fork may not know it was initialised


def module_of(path: str) -> Module:
    """This process's module for ``path`` (``kmsbeam.process``; fork waits for its lock)."""
    return process.shared(
        "pkcs11.module", path, lambda: Module(path), close=Module.logout, fork_lock=lambda m: m.lock
    )


def reinitialize(module_path: str) -> None:
    """Re-initialise a module in this process (C_Finalize, C_Initialize; sessions re-open).

    For tokens created after this process first loaded the module, and for tests that
    change ``SOFTHSM2_CONF``.
    """
    module = module_of(module_path)
    with module.lock:
        if module.lib is not None:
            module.reinitialize()


def call_counts(module_path: str | None = None) -> dict[str, int]:
    """PKCS#11 operations made by this process (one module, or all), by function name."""
    total: Counter[str] = Counter()
    modules = [m for m in process.objects("pkcs11.module") if module_path in (None, m.path)]
    for m in modules:
        with m.lock:
            total.update(m.calls)
    return dict(total)
