"""``kmsbeam oss serve``: the loopback OSS server on this machine, for trying things out.

::

    printf 'dev:devsecret\\n' > oss-keys.txt && chmod 600 oss-keys.txt
    kmsbeam oss serve --port 9500 --data ./oss-data --bucket lake --access-key-file oss-keys.txt
    # in another shell:
    export KMSBEAM_OSS_ENDPOINT=http://127.0.0.1:9500 ALIBABA_CLOUD_ACCESS_KEY_ID=dev ALIBABA_CLOUD_ACCESS_KEY_SECRET=devsecret
    kmsbeam export out/enc/ oss://lake/exports/x/

It is ``kmsbeam.oss.LoopbackOssServer`` (V1/V4 signatures checked, objects, ranges, lists,
multipart, copy) on 127.0.0.1 only, with no TLS: a test server, not a storage service.

Access keys come from ``--access-key-file FILE`` (one ``AK:SECRET`` per line, ``#`` comments),
else ``KMSBEAM_OSS_SERVE_ACCESS_KEYS`` (``AK:SECRET[,AK:SECRET]``), else the client variables
``ALIBABA_CLOUD_ACCESS_KEY_ID`` and ``ALIBABA_CLOUD_ACCESS_KEY_SECRET``: never the command
line, which other users see in the process list. Secrets are never printed.

``--data DIR``: objects are loaded from DIR at start and saved to it when the server stops
(Ctrl-C or SIGTERM; a killed server saves nothing). DIR holds ``index.json`` (buckets, keys,
metadata) and one file per object named by a hash, so an object key never becomes a path.
Without ``--data`` the objects live in memory only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TextIO

from kmsbeam import ConfigurationError
from kmsbeam.pipelines._serve import serve_until_stopped

__all__ = ["ENV_KEYS", "add_oss_parser", "load_data", "run_oss", "save_data"]

ENV_KEYS = "KMSBEAM_OSS_SERVE_ACCESS_KEYS"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_INDEX = "index.json"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535")
    return port


def _bucket(text: str) -> str:
    if not _BUCKET.match(text):
        raise argparse.ArgumentTypeError("a bucket name is 3-63 lowercase letters, digits and hyphens")
    return text


def add_oss_parser(sub: Any) -> None:
    """``kmsbeam oss serve``."""
    text = "an OSS-protocol server on 127.0.0.1 for trying kmsbeam with oss:// paths"
    oss = sub.add_parser("oss", help=text, description=text, allow_abbrev=False)
    cmds = oss.add_subparsers(dest="oss_command", metavar="COMMAND", required=True)
    serve_text = "serve OSS on 127.0.0.1 until Ctrl-C (keys from a file or the environment)"
    serve = cmds.add_parser("serve", help=serve_text, allow_abbrev=False,
                            description=serve_text + ": --access-key-file FILE (lines AK:SECRET), "
                            f"else {ENV_KEYS}=AK:SECRET[,AK:SECRET], else "
                            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET")  # fmt: skip
    serve.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: a free one, printed)")
    serve.add_argument("--data", metavar="DIR",
                       help="load objects from DIR at start and save them there when stopped "
                       "(default: in memory only)")  # fmt: skip
    serve.add_argument("--bucket", type=_bucket, action="append", metavar="NAME",
                       help="a bucket to create (repeatable; buckets in DIR exist already)")
    serve.add_argument("--region", default="cn-hangzhou",
                       help="the region V4 signatures are scoped to (default cn-hangzhou)")
    serve.add_argument("--access-key-file", metavar="FILE",
                       help="access keys, one AK:SECRET per line (keep it chmod 600)")


def _pairs(entries: list[str], where: str) -> list[tuple[str, str]]:
    keys = []
    for entry in entries:
        ak, colon, secret = entry.strip().partition(":")
        if not colon or not ak or not secret or ":" in secret:
            raise ConfigurationError(f"{where} holds an entry that is not AK:SECRET")
        keys.append((ak, secret))
    return keys


def access_keys(path: str | None, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The access keys the server accepts (see the module docstring for the order)."""
    env = dict(os.environ if environ is None else environ)
    if path:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the access key file {path} ({exc.strerror})") from None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        keys = _pairs(lines, f"the access key file {path}")
    elif env.get(ENV_KEYS, "").strip():
        keys = _pairs([e for e in env[ENV_KEYS].split(",") if e.strip()], ENV_KEYS)
    elif env.get("ALIBABA_CLOUD_ACCESS_KEY_ID") and env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        keys = [(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])]
    else:
        keys = []
    if not keys:
        raise ConfigurationError(
            "give the OSS server an access key: --access-key-file FILE (lines AK:SECRET), "
            f"{ENV_KEYS}=AK:SECRET, or ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET (never on the command line)"
        )
    return keys


def _blob(bucket: str, key: str) -> str:
    return hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()


def load_data(server: Any, directory: Path) -> int:
    """Load what ``save_data`` wrote; returns the number of objects."""
    index_path = directory / _INDEX
    if not index_path.exists():
        return 0
    try:
        index = json.loads(index_path.read_text("utf-8"))
        for name in index["buckets"]:
            server.create_bucket(str(name))
        for entry in index["objects"]:
            data = (directory / "objects" / _blob(entry["bucket"], entry["key"])).read_bytes()
            server.store.put(entry["bucket"], entry["key"], data, dict(entry["metadata"]),
                             entry["content_type"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{directory} is not an OSS server data directory that kmsbeam "
                                 f"wrote ({type(exc).__name__}); give another --data DIR") from None  # fmt: skip
    return len(index["objects"])


def save_data(server: Any, directory: Path) -> int:
    """Write every bucket and object to ``directory`` (0700, files 0600); returns the count."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    blobs = directory / "objects"
    blobs.mkdir(mode=0o700, exist_ok=True)
    with server.store.lock:
        buckets = {name: dict(objects) for name, objects in server.store.buckets.items()}
    entries, kept = [], set()
    for name, objects in sorted(buckets.items()):
        for key, obj in sorted(objects.items()):
            blob = _blob(name, key)
            _write(blobs / blob, obj.data)
            kept.add(blob)
            entries.append({"bucket": name, "key": key, "metadata": obj.metadata,
                            "content_type": obj.content_type})  # fmt: skip
    _write(directory / _INDEX, json.dumps({"buckets": sorted(buckets), "objects": entries}).encode())
    for stale in blobs.iterdir():
        if stale.name not in kept:
            stale.unlink()
    return len(entries)


def _write(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def run_oss(args: argparse.Namespace, out: TextIO) -> int:
    """Serve until SIGINT or SIGTERM; save to ``--data`` then. Returns the exit code."""
    from kmsbeam.oss import LoopbackOssServer

    keys = access_keys(args.access_key_file)
    directory = Path(args.data).absolute() if args.data else None
    try:
        server = LoopbackOssServer(buckets=tuple(args.bucket or ()), access_key_id=keys[0][0],
                                   access_key_secret=keys[0][1], region=args.region, port=args.port)  # fmt: skip
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); "
                                 "choose another --port") from None  # fmt: skip
    for ak, secret in keys[1:]:
        server.add_credential(ak, secret)
    loaded = load_data(server, directory) if directory else 0

    def announce() -> None:
        where = f"data {directory}, saved when it stops" if directory else "in memory only"
        buckets = ", ".join(sorted(server.store.buckets)) or "none yet"
        print(f"kmsbeam: OSS loopback server on {server.endpoint} (region {args.region}; buckets: "
              f"{buckets}; {loaded} objects loaded; {where}; {len(keys)} access key(s))", file=out)  # fmt: skip
        print(f"  export KMSBEAM_OSS_ENDPOINT={server.endpoint} KMSBEAM_OSS_REGION={args.region}  "
              "# and an access key in ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET", file=out)  # fmt: skip
        out.flush()

    serve_until_stopped(server, announce)
    if directory:
        saved = save_data(server, directory)
        print(f"kmsbeam: OSS loopback server stopped; {saved} objects saved to {directory}", file=out)
    else:
        print("kmsbeam: OSS loopback server stopped", file=out)
    return 0
