"""``kmsbeam keys ...``: manage the master keys of the embedded keystore (``$KMSBEAM_HOME``).

Only ``local:`` keys for now; the other key sources are managed with their own tools (the
Alibaba Cloud console, the emulator's API, the HSM's tools).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from kmsbeam import ConfigurationError, keystore_home, parse_key_uri
from kmsbeam.kms import KEYSTORE_FILENAME, KmsEngine
from kmsbeam.keys.local import shared_engine

__all__ = ["add_keys_parser", "run_keys"]


def add_keys_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="manage the keys of the local keystore ($KMSBEAM_HOME); create PKCS#11 KEKs",
                          description=__doc__.splitlines()[0])  # fmt: skip
    cmds = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    create = cmds.add_parser("create", help="create a key (and an alias for it)")
    create.add_argument("--alias", help="alias name, e.g. pii (for alias/pii)")
    create.add_argument("--description", default="", help="free text shown by keys list")
    create.add_argument("--key", metavar="URI",
                        help="create the KEK a pkcs11: key URI names, in that HSM token")  # fmt: skip
    cmds.add_parser("list", help="list the keys with their aliases")
    commands = {
        "describe": "show one key",
        "rotate": "add a new key version (new data keys use it; old data still decrypts)",
        "disable": "disable a key (it can no longer encrypt or decrypt)",
        "enable": "enable a key",
    }
    for name, text in commands.items():
        cmd = cmds.add_parser(name, help=text)
        cmd.add_argument("key", metavar="KEY", help="alias/NAME, local:alias/NAME or a key id")
    alias = cmds.add_parser("alias", help="create an alias or point it at another key")
    alias.add_argument("name", metavar="NAME", help="alias name, e.g. pii or alias/pii")
    alias.add_argument("key", metavar="KEY", help="the key id (or alias/OTHER) to point at")


def _key(text: str) -> str:
    """``alias/NAME`` or a key id from what the user typed (``local:`` URIs too)."""
    scheme = text.partition(":")[0]
    if text.startswith("local:"):
        return parse_key_uri(text).key
    if scheme in ("kms-emulator", "alibaba-kms", "alibaba-kms-instance", "pkcs11"):
        raise ConfigurationError(
            f"kmsbeam keys supports local keys only for now; manage {scheme} keys with that "
            "key source's own tools"
        )
    return text


def _alias(text: str) -> str:
    name = _key(text)
    return name if name.startswith("alias/") else f"alias/{name}"


def _engine(create: bool = False) -> KmsEngine:
    return shared_engine(keystore_home(), create=create)


def _list(engine: KmsEngine, out: TextIO) -> None:
    keys = engine.list_keys()
    if not keys:
        print(f"no keys yet in {keystore_home()}; create one with `kmsbeam keys create --alias "
              "NAME`", file=out)  # fmt: skip
        return
    aliases: dict[str, list[str]] = {}
    for a in engine.list_aliases():
        aliases.setdefault(a.key_id, []).append(a.alias_name)
    rows = [("KEY ID", "STATE", "CREATED", "ALIASES", "DESCRIPTION")]
    rows += [(k.key_id, k.key_state, k.creation_date, ",".join(aliases.get(k.key_id, [])) or "-",
              k.description) for k in keys]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r[:4], widths)) + "  " + r[4], file=out)


def _describe(engine: KmsEngine, key: str, out: TextIO) -> None:
    meta = engine.describe_key(key)
    versions = engine.list_key_versions(meta.key_id)
    aliases = [a.alias_name for a in engine.list_aliases_by_key_id(meta.key_id)]
    rows = [
        ("key id", meta.key_id), ("arn", meta.arn), ("state", meta.key_state),
        ("aliases", ", ".join(aliases) or "-"), ("description", meta.description or "-"),
        ("created", meta.creation_date), ("spec", f"{meta.key_spec} ({meta.key_usage})"),
        ("primary version", meta.primary_key_version), ("versions", str(len(versions))),
        ("automatic rotation", meta.automatic_rotation),
        ("last rotation", meta.last_rotation_date or "-"), ("keystore", str(keystore_home())),
    ]  # fmt: skip
    for name, value in rows:
        print(f"{name:<19} {value}", file=out)


def run_keys(args: argparse.Namespace, out: TextIO) -> int:
    """Run one ``keys`` subcommand; kmsbeam errors propagate to the CLI's error handling."""
    cmd = args.keys_command
    if cmd == "create" and getattr(args, "key", None):
        return _create_kek(args, out)
    if cmd == "create":
        alias = _alias(args.alias) if args.alias else None
        engine = _engine(create=True)
        if alias:
            # The key and its alias in one write transaction: of two creates racing for one
            # alias, the loser creates nothing (no orphan key without an alias).
            meta, created = engine.get_or_create_alias(alias, args.description)
            if not created:
                raise ConfigurationError(
                    f"the alias {alias} already exists; pick another name or repoint it with "
                    f"`kmsbeam keys alias {alias} KEYID`"
                )
        else:
            meta = engine.create_key(args.description)
        print(f"created key {meta.key_id}" + (f" with alias {alias}" if alias else "")
              + f" in {keystore_home()}", file=out)  # fmt: skip
    elif cmd == "list":
        if not (keystore_home() / KEYSTORE_FILENAME).exists():
            print(f"no keystore yet at {keystore_home()}; create a key with `kmsbeam keys "
                  "create --alias NAME`", file=out)  # fmt: skip
            return 0
        _list(_engine(), out)
    elif cmd == "describe":
        key = _key(args.key)
        _describe(_engine(), key, out)
    elif cmd == "alias":
        alias, key = _alias(args.name), _key(args.key)
        engine = _engine()
        target = engine.describe_key(key).key_id
        if any(a.alias_name == alias for a in engine.list_aliases()):
            engine.update_alias(alias, target)
            print(f"alias {alias} now points at key {target}", file=out)
        else:
            engine.create_alias(alias, target)
            print(f"created alias {alias} for key {target}", file=out)
    elif cmd == "rotate":
        key = _key(args.key)
        version = _engine().create_key_version(key)
        print(f"key {version.key_id} has a new primary version {version.key_version_id}; "
              "data encrypted under older versions still decrypts", file=out)  # fmt: skip
    elif cmd in ("disable", "enable"):
        key = _key(args.key)
        engine = _engine()
        meta = (engine.disable_key if cmd == "disable" else engine.enable_key)(key)
        print(f"key {meta.key_id} is now {meta.key_state}", file=out)
    return 0


def _create_kek(args: argparse.Namespace, out: TextIO) -> int:
    """``keys create --key pkcs11:...``: a sensitive, non-extractable wrap/unwrap-only KEK."""
    from kmsbeam.pkcs11 import create_kek

    if parse_key_uri(args.key).scheme != "pkcs11":
        raise ConfigurationError(
            "keys create --key is for pkcs11: URIs; local keys take --alias, and kmsbeam never "
            "creates keys in a remote KMS"
        )
    if args.alias:
        raise ConfigurationError("--alias is for the local keystore; a KEK is named by its URI")
    info = create_kek(args.key)
    print(f"created KEK {info.key_id} (CKA_ID {info.primary_version}): {info.description}",
          file=out)  # fmt: skip
    return 0
