"""The help texts, as ``kmsbeam ... --help`` prints them: plain text, and each command's own."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest
from kmsbeam.pipelines.cli import _oss_spelling, build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def help_of(cli, *command: str) -> str:  # type: ignore[no-untyped-def]
    r = cli(*command, "--help")
    assert r.code == 0, r.err
    return str(r.out)


def test_every_help_text_is_plain_text() -> None:
    markup = re.compile(r"``|:(class|func|meth|mod|attr|ref):`|\*\*\w")
    seen = 0
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert not markup.search(text), (path, markup.search(text))
        seen += 1
    assert seen > 15  # every command and subcommand was looked at


def test_the_keys_help_had_markup_and_shows_none(cli) -> None:  # type: ignore[no-untyped-def]
    text = help_of(cli, "keys")
    assert "kmsbeam keys ...: manage the master keys of the embedded keystore" in text


def test_decrypt_help_is_about_decrypting(cli) -> None:  # type: ignore[no-untyped-def]
    text = help_of(cli, "decrypt")
    for encrypt_only in ("fields to encrypt", "--max-records-per-key", "--plaintext-footer",
                         "--external-key-material", "--data-key-max-age", "columns to protect"):  # fmt: skip
        assert encrypt_only not in text, encrypt_only
    for wanted in ("decrypt only these of the encrypted fields", "--require-key", "--key-cache-ttl",
                   "key URI to decrypt with (default: the manifest's key", "Parquet files without a manifest"):  # fmt: skip
        assert wanted in " ".join(text.split()), wanted


def test_encrypt_help_is_about_encrypting(cli) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(help_of(cli, "encrypt").split())
    for wanted in ("fields to encrypt", "--max-records-per-key", "--plaintext-footer", "--data-key-max-age",
                   "--progress-every SECONDS", "no progress and no summary table"):  # fmt: skip
        assert wanted in text, wanted
    for decrypt_only in ("--require-key", "--key-cache-ttl"):
        assert decrypt_only not in text, decrypt_only


def test_plaintext_footer_help_says_what_stays_unreadable(cli) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(help_of(cli, "encrypt").split())
    assert "the plaintext columns' values; encrypted columns stay unreadable" in text


@pytest.mark.parametrize("command", [("cat",), ("oss", "serve")])
def test_oss_options_are_spelt_with_underscores(cli, command: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    text = help_of(cli, *command)
    assert "--oss-" not in text
    if command == ("cat",):
        assert "--oss_endpoint" in text


def test_the_hyphen_spelling_is_an_alias() -> None:
    assert _oss_spelling(["cat", "oss://b/k", "--oss-endpoint", "http://x"]) == [
        "cat", "oss://b/k", "--oss_endpoint", "http://x"]
    assert _oss_spelling(["--oss-auth-version=v4", "--fields", "a"]) == ["--oss_auth_version=v4", "--fields", "a"]
    args, _ = build_parser().parse_known_args(_oss_spelling(["cat", "oss://b/k", "--oss-endpoint", "http://x"]))
    assert args.oss_endpoint == "http://x"
    args, _ = build_parser().parse_known_args(["cat", "oss://b/k", "--oss_endpoint", "http://y"])
    assert args.oss_endpoint == "http://y"
