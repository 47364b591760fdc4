"""No cleartext left behind: encrypt-side dead letters are sealed, decrypt-side ones hold the
ciphertext input; files are 0600 (directories 0700); ``kmsbeam dead-letters show|replay``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pipelines.conftest import shard_lines, table_value


def _with_holes(customers: Path, tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    rows = [json.loads(line) for line in customers.read_text().splitlines()]
    holes = rows[::100]
    for row in holes:
        row.pop("ssn")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, holes


def _modes(directory: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in [directory, *directory.rglob("*")]}


def test_encrypt_dead_letters_are_sealed_private_and_readable_with_show(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:  # fmt: skip
    source, holes = _with_holes(customers, tmp_path)
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--fields", "ssn", "--max-dead-letters", "10")
    assert r.code == 0, r.err
    dead = enc / "_dead_letters"
    text = "".join(p.read_text() for p in dead.glob("part-*"))
    letters = [json.loads(x) for x in shard_lines(dead)]
    assert len(letters) == 10 and {d["reason"] for d in letters} == {"missing field: ssn"}
    assert all(set(d) == {"kmsbeam_dead_letter", "transform", "reason", "sealed"} for d in letters)
    for row in holes:  # nothing of the records in clear: names, e-mails, phones
        assert str(row["email"]) not in text and str(row["phone"]) not in text
    assert _modes(enc) == {("dir", 0o700), ("file", 0o600)}
    r = cli("dead-letters", "show", dead)
    assert r.code == 0 and "10  missing field: ssn" in r.out and "10 sealed under local:" in r.out, r.out
    assert str(holes[0]["email"]) not in r.out
    r = cli("dead-letters", "show", dead, "--records")  # stdout is not a terminal here
    assert r.code == 2 and "terminal" in r.err and str(holes[0]["email"]) not in r.out + r.err
    r = cli("dead-letters", "show", dead, "--records", "--allow-pipe")
    assert r.code == 0, r.err
    shown = [json.loads(x) for x in r.out.splitlines() if x.startswith("{")]
    assert sorted((d["record"]["id"], d["reason"]) for d in shown) == sorted(
        (row["id"], "missing field: ssn") for row in holes)  # fmt: skip
    assert {json.dumps(d["record"], sort_keys=True) for d in shown} == {json.dumps(r, sort_keys=True) for r in holes}


def test_a_changed_sealed_letter_does_not_open(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, _ = _with_holes(customers, tmp_path)
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--fields", "ssn", "-q").code == 3
    (shard,) = (enc / "_dead_letters").glob("part-*")
    letters = [json.loads(x) for x in shard.read_text().splitlines()]
    letters[0]["reason"] = "something else"  # the reason is bound into the sealed value
    shard.write_text("".join(json.dumps(d) + "\n" for d in letters))
    r = cli("dead-letters", "show", enc / "_dead_letters", "--records", "--allow-pipe")
    assert r.code != 0 and "Traceback" not in r.err, r.err


def test_decrypt_dead_letters_hold_the_ciphertext_and_replay_writes_a_normal_output(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                                   tmp_path: Path) -> None:  # fmt: skip
    from kmsbeam import open_key_source

    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/b", "-q").code == 0
    open_key_source("local:alias/a", create=True)
    plain = tmp_path / "plain"
    r = cli("decrypt", enc, plain, "--key", "local:alias/a", "--require-key", "alias/a", "-q")
    assert r.code == 3 and "every record (1,000)" in r.err, r.err
    letters = [json.loads(x) for x in shard_lines(plain / "_dead_letters")]
    encrypted = {json.loads(x)["id"]: json.loads(x)["ssn"] for x in shard_lines(enc)}
    assert all(d["record"]["ssn"] == encrypted[d["record"]["id"]] for d in letters)  # ciphertext as read
    originals = [json.loads(x) for x in customers.read_text().splitlines()]
    text = (plain / "_dead_letters").joinpath(next((plain / "_dead_letters").glob("part-*")).name).read_text()
    assert not any(str(o["ssn"]) in text for o in originals[:50])
    r = cli("dead-letters", "show", plain / "_dead_letters")
    assert r.code == 0 and "1,000  key not allowed" in r.out and "0 sealed" in r.out, r.out
    # the fix: decrypt without the requirement; replay runs the job's transform over the records
    fixed = tmp_path / "fixed"
    r = cli("dead-letters", "replay", plain / "_dead_letters", fixed)
    assert r.code == 0, r.err
    assert table_value(r.out, "records out") == "1,000"
    canon = lambda rows: sorted(json.dumps(x, sort_keys=True) for x in rows)  # noqa: E731
    assert canon(json.loads(x) for x in shard_lines(fixed)) == canon(originals)
    assert _modes(fixed) == {("dir", 0o700), ("file", 0o600)}


def test_replay_of_encrypt_dead_letters_seals_what_fails_again(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, holes = _with_holes(customers, tmp_path)
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--fields", "ssn", "-q").code == 3
    again = tmp_path / "again"
    r = cli("dead-letters", "replay", enc / "_dead_letters", again)
    assert r.code == 3 and "every record (10)" in r.err, r.err
    letters = [json.loads(x) for x in shard_lines(again / "_dead_letters")]
    assert len(letters) == 10 and all("sealed" in d and "record" not in d for d in letters)


def test_show_of_a_directory_without_dead_letters_says_so(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("dead-letters", "show", tmp_path / "nothing-here")
    assert r.code == 2 and "holds no dead letters" in r.err, r.err
