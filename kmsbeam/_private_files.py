"""Files that hold secrets (the keystore, PIN files): refuse what ssh refuses for ``~/.ssh``.

A keystore supplies master keys, so whoever can replace it chooses the keys data is
encrypted under. The rules, after OpenSSH's ``StrictModes`` and ``sshkey_perm_ok``:

- the keystore directory and keystore files are not symbolic links (``lstat``);
- every one of them is owned by the current user or root;
- the directory and each parent up to the user's home (or ``/`` when the path is not in the
  home) is owned by the user or root and not writable by group or others, except that a
  sticky directory such as ``/tmp`` may be (others cannot rename or delete what we own in it;
  ssh itself refuses it, which would forbid every keystore under a temporary directory);
- keystore files are not readable or writable by group or others: an existing file that is
  only readable by them and is ours is narrowed to 0600 (logged once); a writable one is
  refused (its keys may have been replaced);
- directories are created 0700 one level at a time, whatever the umask;
- a secret file (a PIN) is refused when group or others may read or write it.

Every refusal is one ``ConfigurationError`` sentence naming the path and what to run.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from kmsbeam.errors import ConfigurationError

__all__ = ["check_private_dir", "check_private_file", "check_secret_file", "make_private_dir"]

_log = logging.getLogger("kmsbeam.keystore")
_WRITABLE = stat.S_IWGRP | stat.S_IWOTH
_OTHERS = 0o077


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _owner_error(path: Path, what: str, uid: int) -> ConfigurationError:
    return ConfigurationError(
        f"{what} {path} is owned by uid {uid}, not by you (uid {os.geteuid()}) or root; "
        f"use one you own (or run chown {os.geteuid()} {path} if it is yours)"
    )


def _user_home() -> Path | None:
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir).resolve()
    except (KeyError, OSError):
        return None


def make_private_dir(path: Path, what: str) -> None:
    """Create ``path`` and its missing parents, each level 0700 whatever the umask, after
    checking the existing ancestors as ``check_private_dir`` checks parents (nothing is
    created under a directory others could write in)."""
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    level = path
    while not os.path.lexists(level) and level != level.parent:
        missing.append(level)
        level = level.parent
    if missing:
        _check_parents(level.resolve(), what, path)
    for level in reversed(missing):
        try:
            os.mkdir(level, 0o700)
        except FileExistsError:
            continue  # another process made it: checked like any existing directory
        os.chmod(level, 0o700)


def check_private_dir(path: Path, what: str) -> None:
    """Refuse a directory of secrets that someone else could replace or write into.

    Raises:
        ConfigurationError: a symbolic link, not a directory, a foreign owner, or group- or
            world-writable (the directory, or a non-sticky parent up to the user's home).
    """
    path = Path(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigurationError(
            f"{what} {path} is a symbolic link; name the directory it points to instead"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"{what} {path} is not a directory; name a directory")
    if not _trusted(st.st_uid):
        raise _owner_error(path, what, st.st_uid)
    if st.st_mode & _WRITABLE:
        raise ConfigurationError(
            f"{what} {path} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); run chmod 700 {path}"
        )
    _check_parents(path.resolve().parent, what, path)


def _check_parents(first: Path, what: str, path: Path) -> None:
    """``first`` and its parents up to the user's home (else ``/``): owned by the user or
    root, and not writable by group or others unless sticky."""
    home = _user_home()
    stop = home if home is not None and first.is_relative_to(home) else None
    for parent in (first, *first.parents):
        if stop is not None and not parent.is_relative_to(stop):
            break  # like ssh: the user's home is the last directory checked
        pst = os.stat(parent)
        if not _trusted(pst.st_uid):
            raise ConfigurationError(
                f"{parent}, a parent of {what} {path}, is owned by uid {pst.st_uid}, who could "
                "replace it; use a directory whose parents only you and root own"
            )
        if pst.st_mode & _WRITABLE and not pst.st_mode & stat.S_ISVTX:
            raise ConfigurationError(
                f"{parent}, a parent of {what} {path}, is writable by group or others (mode "
                f"{stat.S_IMODE(pst.st_mode):04o}); run chmod go-w {parent} or use another "
                "directory"
            )


def check_private_file(path: Path, what: str) -> None:
    """Check an existing file of secrets (absent is fine); narrow 0644-like modes to 0600.

    Raises:
        ConfigurationError: a symbolic link, not a regular file, a foreign owner, writable
            by group or others, or readable by them and not ours to narrow.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ConfigurationError(
            f"{what} {path} is a symbolic link; move the file it points to into {path.parent} "
            "instead"
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError(f"{what} {path} is not a regular file; move it away")
    if not _trusted(st.st_uid):
        raise _owner_error(path, what, st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    if mode & _WRITABLE:
        raise ConfigurationError(
            f"{what} {path} is writable by group or others (mode {mode:04o}), so its keys may "
            f"have been replaced; check it, then run chmod 600 {path}"
        )
    if mode & _OTHERS:
        if st.st_uid != os.geteuid():
            raise ConfigurationError(
                f"{what} {path} is readable by group or others (mode {mode:04o}); have its "
                f"owner run chmod 600 {path}"
            )
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        _log.warning("kmsbeam: %s %s was readable by group or others (mode %04o); narrowed it "
                     "to 0600", what, path, mode)  # fmt: skip


def check_secret_file(fd: int, path: str, what: str) -> None:
    """Refuse an opened secret file (``fstat``) that group or others may read or write.

    Raises:
        ConfigurationError: not a regular file, a foreign owner, or any group/other access.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError(f"{what} {path} is not a regular file")
    if not _trusted(st.st_uid):
        raise _owner_error(Path(path), what, st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    if mode & _OTHERS:
        raise ConfigurationError(
            f"{what} {path} is readable or writable by group or others (mode {mode:04o}); "
            f"run chmod 600 {path}"
        )
