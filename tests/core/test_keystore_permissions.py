"""Keystores and PIN files: refuse what ssh refuses (issue 14, item 0d).

The tests run as root, so a foreign owner is made with ``os.chown`` to uid 65534 (nobody).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kmsbeam.emulator import EmulatorServer
from kmsbeam.errors import ConfigurationError
from kmsbeam.kms import KEYSTORE_FILENAME, KeyStore
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.pipelines.cli import main
from kmsbeam.pkcs11 import PinSource

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def make_store(home: Path) -> Path:
    """A real keystore with one key (alias/pii) in ``home``; returns the keystore file."""
    LocalKeySource("local:alias/pii", home=home, create=True)
    KeyStore(home, create=False).close()
    return home / KEYSTORE_FILENAME


def refused(home: Path, *needles: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        KeyStore(home, create=True)
    text = str(info.value)
    for needle in needles:
        assert needle in text, text
    assert text.count(". ") == 0 and "\n" not in text  # one sentence
    return text


def test_a_world_writable_home_is_refused_and_the_cli_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    refused(home, str(home), f"chmod 700 {home}")
    assert not (home / KEYSTORE_FILENAME).exists()
    monkeypatch.setenv("KMSBEAM_HOME", str(home))
    assert main(["keys", "create", "--alias", "pii"]) == 2
    err = capsys.readouterr().err
    assert f"chmod 700 {home}" in err and "Traceback" not in err
    home.chmod(0o700)
    assert main(["keys", "create", "--alias", "pii"]) == 0


def test_a_group_writable_existing_home_with_a_keystore_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_store(home)
    home.chmod(0o770)
    refused(home, "writable by group or others (mode 0770)", f"chmod 700 {home}")


def test_a_symlinked_home_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    make_store(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    refused(link, f"{link} is a symbolic link")
    with pytest.raises(ConfigurationError, match="symbolic link"):
        LocalKeySource("local:alias/pii", home=link)


def test_a_symlinked_keystore_file_is_refused(tmp_path: Path) -> None:
    theirs = make_store(tmp_path / "attacker")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / KEYSTORE_FILENAME).symlink_to(theirs)
    refused(home, f"{home / KEYSTORE_FILENAME} is a symbolic link")
    with pytest.raises(ConfigurationError, match="symbolic link"):
        LocalKeySource("local:alias/pii", home=home)


@pytest.mark.parametrize("file_mode", [0o666, 0o600])
def test_a_keystore_owned_by_someone_else_is_refused(tmp_path: Path, file_mode: int) -> None:
    home = tmp_path / "home"
    db = make_store(home)
    os.chown(db, NOBODY, NOBODY)
    db.chmod(file_mode)
    refused(home, str(db), f"owned by uid {NOBODY}")
    with pytest.raises(ConfigurationError, match=f"uid {NOBODY}"):
        LocalKeySource("local:alias/pii", home=home)


def test_a_home_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_store(home)
    os.chown(home, NOBODY, NOBODY)
    refused(home, str(home), f"owned by uid {NOBODY}")


def test_our_world_writable_keystore_is_refused_not_narrowed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = make_store(home)
    db.chmod(0o666)
    refused(home, "may have been replaced", f"chmod 600 {db}")
    assert mode(db) == 0o666  # nothing changed behind the user's back


def test_our_readable_keystore_is_narrowed_once_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    db = make_store(home)
    db.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="kmsbeam.keystore"):
        KeyStore(home, create=False).close()
        KeyStore(home, create=False).close()
    assert mode(db) == 0o600
    said = [r.getMessage() for r in caplog.records if "narrowed" in r.getMessage()]
    assert said == [f"kmsbeam: the keystore {db} was readable by group or others (mode 0644); "
                    "narrowed it to 0600"]  # fmt: skip


def test_a_readable_wal_file_is_narrowed_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = make_store(home)
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"")
    wal.chmod(0o644)
    KeyStore(home, create=False).close()
    assert mode(wal) == 0o600


def test_a_parent_writable_by_others_is_refused_unless_sticky(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    home = parent / "home"
    refused(home, f"{parent}, a parent of", f"chmod go-w {parent}")
    assert not home.exists()
    parent.chmod(0o1777)  # like /tmp: others cannot replace what we own in it
    KeyStore(home, create=True).close()
    assert mode(home) == 0o700


def test_a_parent_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    home = parent / "home"
    make_store(home)
    os.chown(parent, NOBODY, NOBODY)
    refused(home, f"{parent}, a parent of", f"uid {NOBODY}")


def test_every_created_level_is_0700_under_umask_000(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b" / "home"
    code = (
        "import os, sys; from pathlib import Path; os.umask(0);"
        "from kmsbeam.keys.local import LocalKeySource;"
        "LocalKeySource('local:alias/pii', home=Path(sys.argv[1]), create=True)"
    )
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, timeout=60)
    for level in (tmp_path / "a", tmp_path / "a" / "b", home):
        assert mode(level) == 0o700, level
    for name in os.listdir(home):
        assert mode(home / name) == 0o600, name


def test_the_emulator_data_directory_is_checked_the_same_way(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    with pytest.raises(ConfigurationError, match=f"chmod 700 {data}"):
        EmulatorServer(data, {"ak": "secret"})
    data.chmod(0o700)
    make_store(data)
    db = data / KEYSTORE_FILENAME
    os.chown(db, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match=f"uid {NOBODY}"):
        EmulatorServer(data, {"ak": "secret"})


@pytest.mark.parametrize("pin_mode", [0o644, 0o640, 0o604, 0o620])
def test_a_pin_file_others_may_read_or_write_is_refused(tmp_path: Path, pin_mode: int) -> None:
    path = tmp_path / "pin"
    path.write_text("1234\n")
    path.chmod(pin_mode)
    with pytest.raises(ConfigurationError) as info:
        PinSource.parse(f"file:{path}").read()
    assert f"chmod 600 {path}" in str(info.value) and "1234" not in str(info.value)
    path.chmod(0o600)
    assert PinSource.parse(f"file:{path}").read() == "1234"
    path.chmod(0o400)
    assert PinSource.parse(f"file:{path}").read() == "1234"


def test_a_pin_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("1234\n")
    path.chmod(0o600)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match=f"PIN file {path} is owned by uid {NOBODY}"):
        PinSource.parse(f"file:{path}").read()
