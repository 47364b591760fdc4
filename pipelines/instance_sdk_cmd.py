"""``kmsbeam instance-sdk install|check``: the official KMS-instance SDK, in its own virtualenv.

::

    kmsbeam instance-sdk install                 # ~/.local/share/kmsbeam/instance-sdk
    kmsbeam instance-sdk install --dir /opt/kmsbeam/instance-sdk   # then KMSBEAM_INSTANCE_SDK=...
    kmsbeam instance-sdk check                   # where it is, and whether it imports

``alibaba-kms-instance://`` key URIs need it (``kmsbeam.alikms._instance_sdk`` says why it is
kept apart: its protobuf 3 cannot live beside Beam's protobuf 6). ``install`` makes the
virtualenv with this Python and runs ``pip install alibabacloud-dkms-gcs==1.0.2`` in it, so
it needs the package index pip is configured with. Every machine that runs workers needs it
too (the worker image installs it: ``docker/worker/Dockerfile``).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any, TextIO

from kmsbeam.alikms import SDK_ENV, SDK_REQUIREMENT, install_sdk, sdk_dir, sdk_python

__all__ = ["add_instance_sdk_parser", "run_instance_sdk"]


def add_instance_sdk_parser(sub: Any) -> None:
    p = sub.add_parser("instance-sdk", help="install or check the KMS-instance SDK (alibaba-kms-instance:// keys)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    cmds = p.add_subparsers(dest="instance_sdk_command", metavar="COMMAND", required=True)
    install = cmds.add_parser("install", help=f"create a virtualenv with {SDK_REQUIREMENT}")
    install.add_argument("--dir", type=Path, default=None,
                         help=f"where (default: ${SDK_ENV}, else ~/.local/share/kmsbeam/instance-sdk)")
    cmds.add_parser("check", help="say where the SDK is and whether it imports")


def run_instance_sdk(args: argparse.Namespace, out: TextIO) -> int:
    if args.instance_sdk_command == "install":
        python = install_sdk(args.dir)
        note = "" if args.dir is None or args.dir.expanduser().absolute() == sdk_dir().absolute() else (
            f"; set {SDK_ENV}={python.parent.parent} for kmsbeam to use it")
        print(f"kmsbeam: {SDK_REQUIREMENT} is installed in {python.parent.parent}{note}", file=out)
        return 0
    python = sdk_python()  # ConfigurationError (exit 2) when missing, saying how to install
    done = subprocess.run([str(python), "-c", "import sdk.client, openapi.models"], check=False,
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        print(f"kmsbeam: {python} cannot import the instance SDK; run `kmsbeam instance-sdk install`", file=out)
        return 1
    print(f"kmsbeam: the instance SDK is ready ({python})", file=out)
    return 0
