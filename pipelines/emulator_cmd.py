"""``kmsbeam emulator serve``: run the kmsbeam KMS emulator (Alibaba Cloud KMS API 2016-01-20).

::

    KMSBEAM_EMULATOR_ACCESS_KEYS=dev:devsecret kmsbeam emulator serve --port 9800 --data DIR
    kmsbeam emulator serve --data ./kms-data --access-key-file keys.txt --throttle-rate 0.05

Access keys come from ``--access-key-file FILE`` (repeatable; one ``AK:SECRET[:POLICYFILE]``
per line, ``#`` comments, POLICYFILE relative to FILE), ``--config FILE`` (JSON, below) or,
if neither is given, the ``KMSBEAM_EMULATOR_ACCESS_KEYS`` environment variable (entries
``AK:SECRET[:POLICYFILE]`` separated by spaces). A file holding secrets is refused, as ssh
refuses a private key, unless it is a regular file owned by the caller and closed to group
and others (``chmod 600 FILE``). ``--access-key AK:SECRET[:POLICYFILE]`` still works but is
deprecated and warns: the command line is visible to every local user (``ps``, ``/proc``).
AK and SECRET cannot contain ``:``. The config file::

    {"access_keys": [
      {"id": "ingest", "secret_env": "INGEST_SECRET", "policy_file": "ingest-policy.json"},
      {"id": "admin", "secret": "s2"},
      {"id": "STS.tmp", "secret": "s3", "security_token": "tok", "policy": {"Statement": []}}]}

(``policy_file`` is relative to the config file; with an inline ``secret`` the file's mode is
checked like an access key file's). The one line printed names the endpoint;
secrets are never printed. Ctrl-C (or SIGTERM) stops the server cleanly.

``--instance-port N`` also serves the KMS 3.0 instance API over HTTPS on ``HOST:N`` for the
official instance SDK (``alibabacloud-dkms-gcs``); a second line names its endpoint and the
CA file (``DIR/gateway-ca.pem``) to give the SDK as ``ca_file_path``. ClientKeys for it::

    KMSBEAM_KMS_CLIENT_KEY_PASSWORD=... kmsbeam emulator client-key --data DIR --out ck.json \
        [--key alias/pii ...]          # or --password-file FILE (mode 0600)

writes the ClientKey file (mode 0600) and prints its id; a running server sees it at once.
The password is never taken from the command line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from kmsbeam import ConfigurationError
from kmsbeam.emulator import AccessKey, EmulatorServer, Faults, Policy
from kmsbeam.pipelines._serve import serve_until_stopped

__all__ = ["ENV_ACCESS_KEYS", "add_emulator_parser", "reject_extra", "run_emulator"]

ENV_ACCESS_KEYS = "KMSBEAM_EMULATOR_ACCESS_KEYS"
ENV_CLIENT_KEY_PASSWORD = "KMSBEAM_KMS_CLIENT_KEY_PASSWORD"
_KEY_FIELDS = {"id", "secret", "secret_env", "policy", "policy_file", "security_token",
               "expiration"}  # fmt: skip


def _port(text: str) -> int:
    if not text.isdecimal() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("expected a fraction from 0 to 1, e.g. 0.05")
    return value


def _millis(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 600_000:
        raise argparse.ArgumentTypeError("expected milliseconds from 0 to 600000")
    return value


def add_emulator_parser(sub: argparse._SubParsersAction) -> None:
    emulator = sub.add_parser("emulator", help="run the kmsbeam KMS emulator (Alibaba KMS API)",
                              description=__doc__.splitlines()[0], allow_abbrev=False)  # fmt: skip
    cmds = emulator.add_subparsers(dest="emulator_command", metavar="COMMAND", required=True)
    serve = cmds.add_parser("serve", allow_abbrev=False,
                            help="serve the KMS API on HOST:PORT until Ctrl-C",
                            description="Serve Alibaba Cloud KMS API 2016-01-20 for the official "
                            "SDK (Config(endpoint='HOST:PORT', protocol='http')).")  # fmt: skip
    add = serve.add_argument
    add("--data", required=True, metavar="DIR",
        help="keystore directory (created if missing; keys survive restarts)")  # fmt: skip
    add("--port", type=_port, default=9800, help="port (default 9800; 0 = any free port)")
    add("--host", default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 only inside a container)")  # fmt: skip
    add("--access-key-file", action="append", metavar="FILE",
        help="access keys, one AK:SECRET[:POLICYFILE] per line; mode 0600 (repeatable)")
    add("--access-key", action="append", metavar="AK:SECRET[:POLICYFILE]",
        help="deprecated: puts the secret on the command line; use --access-key-file")  # fmt: skip
    add("--config", metavar="FILE", help="JSON file of access keys (see the module docs)")
    add("--region", default="cn-hangzhou", help="region in ARNs (default cn-hangzhou)")
    add("--audit-log", metavar="PATH", help="audit log (default DIR/audit.jsonl)")
    add("--latency-ms", type=_millis, default=0.0, metavar="N", help="add N ms to every call")
    add("--throttle-rate", type=_rate, default=0.0, metavar="R",
        help="answer a fraction R of calls 429 Rejected.Throttling")  # fmt: skip
    add("--error-rate", type=_rate, default=0.0, metavar="R",
        help="answer a fraction R of calls 503/500")  # fmt: skip
    add("--drop-rate", type=_rate, default=0.0, metavar="R",
        help="close the connection of a fraction R of calls without an answer")  # fmt: skip
    add("--seed", type=int, metavar="N", help="make the injected faults reproducible")
    add("--max-connections", type=int, default=1024, metavar="N",
        help="open connections at most (default 1024; past it the longest waiting is closed)")
    add("--workers", type=int, default=16, metavar="N", help="threads serving calls (default 16)")
    add("--request-timeout", type=float, default=10.0, metavar="S",
        help="seconds for a request to arrive whole, and its answer to be taken (default 10)")
    add("--idle-timeout", type=float, default=120.0, metavar="S",
        help="seconds an idle keep-alive connection is kept (default 120)")  # fmt: skip
    add("--instance-port", type=_port, metavar="N",
        help="also serve the KMS instance API (HTTPS, instance SDK) on port N (0 = any)")
    ck = cmds.add_parser("client-key", allow_abbrev=False,
                         help="issue a ClientKey for the instance API (--instance-port)",
                         description="Write a ClientKey file for the instance SDK; the password "
                         f"comes from ${ENV_CLIENT_KEY_PASSWORD} or --password-file.")  # fmt: skip
    ck.add_argument("--data", required=True, metavar="DIR", help="the emulator's data directory")
    ck.add_argument("--out", required=True, metavar="FILE", help="the ClientKey file to write")
    ck.add_argument("--password-file", metavar="FILE", help="the password (file mode 0600)")
    ck.add_argument("--key", action="append", metavar="KEY",
                    help="a key id or alias/NAME it may use (repeatable; default all keys)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reject_extra(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """Fail on unknown arguments without echoing them (a mistyped option may hold a secret)."""
    if extra:
        first = extra[0]
        shown = first.split("=")[0] if first.startswith("-") else "(a positional argument)"
        parser.error(f"unrecognized argument {shown}")


def _from_spec(spec: str, where: str) -> AccessKey:
    """``AK:SECRET[:POLICYFILE]``; errors never quote the entry (it holds a secret)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigurationError(f"{where} takes AK:SECRET[:POLICYFILE]; an entry has no secret")
    policy = Policy.from_file(parts[2]) if len(parts) == 3 and parts[2] else None
    return AccessKey(parts[0], parts[1], policy=policy)


def _read(path: str, what: str) -> tuple[str, os.stat_result]:
    """The text of a file and the status of what was opened (not of a later path lookup)."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(1 << 20)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError:
        raise ConfigurationError(f"the {what} {path} is not UTF-8 text") from None


def _check_private(path: str, what: str, info: os.stat_result) -> None:
    """Refuse a file holding secrets unless only its owner (the caller) can read or write
    it, as ssh refuses a loose private key."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"the {what} {path} is not a regular file")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ConfigurationError(f"the {what} {path} is owned by another user; it holds "
                                 "secrets: use a file you own with mode 0600")  # fmt: skip
    if info.st_mode & 0o077:
        raise ConfigurationError(f"the {what} {path} can be read or written by other users "
                                 f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 {path}")


def _from_key_file(path: str) -> list[AccessKey]:
    """``AK:SECRET[:POLICYFILE]`` per line; POLICYFILE relative to the file."""
    keys = []
    text, info = _read(path, "access key file")
    _check_private(path, "access key file", info)
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        ak, _, rest = entry.partition(":")
        secret, _, policy = rest.partition(":")
        if policy:
            entry = f"{ak}:{secret}:{Path(path).parent / policy}"
        keys.append(_from_spec(entry, f"the access key file {path}"))
    if not keys:
        raise ConfigurationError(f"the access key file {path} names no access key")
    return keys


def _from_config(path: str) -> list[AccessKey]:
    text, info = _read(path, "config file")
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"the config file {path} is not valid JSON") from None
    entries = document.get("access_keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigurationError(f'the config file {path} needs {{"access_keys": [...]}}')
    if any("secret" in entry or "security_token" in entry for entry in entries):
        _check_private(path, "config file", info)  # inline secrets: the file must be private
    keys = []
    for entry in entries:
        unknown = set(entry) - _KEY_FIELDS
        if unknown:
            raise ConfigurationError(f"unknown access key field(s) in {path}: {sorted(unknown)}")
        secret: Any = entry.get("secret")
        if "secret_env" in entry:
            secret = os.environ.get(str(entry["secret_env"]))
            if not secret:
                raise ConfigurationError(f"the environment variable {entry['secret_env']} "
                                         f"(secret of {entry.get('id')}) is not set")  # fmt: skip
        policy: Any = entry.get("policy")
        if "policy_file" in entry:
            policy = Policy.from_file(Path(path).parent / str(entry["policy_file"]))
        keys.append(AccessKey(str(entry.get("id", "")), secret if isinstance(secret, str) else "",
                              policy=policy, security_token=entry.get("security_token"),
                              expiration=entry.get("expiration")))  # fmt: skip
    return keys


def _access_keys(args: argparse.Namespace) -> list[AccessKey]:
    keys = [_from_spec(s, "--access-key") for s in args.access_key or []]
    if keys:
        print("kmsbeam: warning: --access-key puts a secret on the command line, where every "
              "local user can read it (ps, /proc); it is deprecated: use --access-key-file FILE "
              f"(mode 0600) or {ENV_ACCESS_KEYS}", file=sys.stderr)  # fmt: skip
    for path in args.access_key_file or []:
        keys += _from_key_file(path)
    if args.config:
        keys += _from_config(args.config)
    if not keys and os.environ.get(ENV_ACCESS_KEYS, "").strip():
        keys = [_from_spec(s, ENV_ACCESS_KEYS) for s in os.environ[ENV_ACCESS_KEYS].split()]
    if not keys:
        raise ConfigurationError(
            f"give at least one access key: --access-key-file FILE, --config FILE or "
            f"{ENV_ACCESS_KEYS}=AK:SECRET"
        )
    return keys


def _client_key(args: argparse.Namespace, out: TextIO) -> int:
    if args.password_file:
        text, info = _read(args.password_file, "password file")
        _check_private(args.password_file, "password file", info)
        password = text.rstrip("\r\n")
    else:
        password = os.environ.get(ENV_CLIENT_KEY_PASSWORD, "")
    if not password:
        raise ConfigurationError(f"give the ClientKey's password in ${ENV_CLIENT_KEY_PASSWORD} "
                                 "or --password-file FILE (mode 0600)")  # fmt: skip
    data = Path(args.data).expanduser()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        key_id = EmulatorServer.issue_client_key_in(data, args.out, password, keys=args.key)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the ClientKey ({exc.strerror or exc}: "
                                 f"{exc.filename})") from None  # fmt: skip
    allowed = ", ".join(args.key) if args.key else "all keys"
    print(f"ClientKey {key_id} written to {args.out} (mode 0600; may use {allowed})", file=out)
    return 0


def run_emulator(args: argparse.Namespace, out: TextIO, *, ready: threading.Event | None = None,
                 stop: threading.Event | None = None) -> int:  # fmt: skip
    """Serve until Ctrl-C/SIGTERM (or ``stop`` is set, for tests); returns the exit code."""
    if args.emulator_command == "client-key":
        return _client_key(args, out)
    keys = _access_keys(args)
    faults = Faults(latency_ms=args.latency_ms, throttle_rate=args.throttle_rate,
                    error_rate=args.error_rate, drop_rate=args.drop_rate,
                    seed=args.seed)  # fmt: skip
    try:
        server = EmulatorServer(args.data, keys, host=args.host, port=args.port,
                                region=args.region, audit_log=args.audit_log,
                                faults=faults if faults.active else None,
                                max_connections=args.max_connections, workers=args.workers,
                                request_timeout=args.request_timeout,
                                idle_timeout=args.idle_timeout,
                                instance_gateway=args.instance_port is not None,
                                instance_port=args.instance_port or 0)  # fmt: skip
    except OSError as exc:
        raise ConfigurationError(f"cannot use the data directory or audit log "
                                 f"({exc.strerror or exc}: {exc.filename})") from None  # fmt: skip

    def announce() -> None:
        if not _loopback(args.host):
            print(f"kmsbeam: warning: listening on {args.host} exposes the emulator and its keys "
                  "beyond this machine; use it only inside a container or a private network",
                  file=sys.stderr)  # fmt: skip
        names = ", ".join(k.access_key_id for k in keys)
        print(f"kmsbeam KMS emulator on http://{server.endpoint} (data {server.data_dir}, "
              f"audit {server.audit.path}, access keys {names}); Ctrl-C stops",
              file=out, flush=True)  # fmt: skip
        if args.instance_port is not None:
            print(f"kmsbeam KMS instance gateway on https://{server.instance_endpoint} "
                  f"(CA file {server.instance_ca_file}; ClientKeys: kmsbeam emulator client-key)",
                  file=out, flush=True)  # fmt: skip
        if ready is not None:
            ready.set()

    serve_until_stopped(server, announce, stop)
    return 0
