"""The official KMS-instance SDK (``alibabacloud-dkms-gcs``), run in its own interpreter.

The instance SDK's generated protobuf code needs protobuf 3 (and pyOpenSSL < 23.3, hence
cryptography 41), while Apache Beam needs protobuf 6: the two cannot share one interpreter.
So kmsbeam keeps the SDK, unmodified and with exactly the dependencies it declares, in a
virtualenv of its own, and runs it in a helper process (``_instance_helper.py``, standard
library plus the SDK) that it talks to over a pipe:

==================================  ===========================================================
what                                where
==================================  ===========================================================
the SDK's virtualenv                ``$KMSBEAM_INSTANCE_SDK``, else
                                    ``~/.local/share/kmsbeam/instance-sdk``
install it                          ``kmsbeam instance-sdk install [--dir DIR]`` (a venv, then
                                    ``pip install alibabacloud-dkms-gcs==1.0.2``)
helper processes                    one per gateway (endpoint, CA, ClientKey) per kmsbeam process,
                                    started at the first call; a forked child starts its own
==================================  ===========================================================

The ClientKey password reaches the helper in its first message on the pipe (never its
argument list or environment) and lives only in the two processes' memory. Plaintext data
keys cross the pipe (base64 in JSON) and nothing else sees them. Calls to one helper are
serialised (a lock); the instance gateway answers in milliseconds and kmsbeam amortises
GenerateDataKey per bundle, so one helper per gateway per worker process suffices.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from kmsbeam import process
from kmsbeam.errors import ConfigurationError

__all__ = [
    "DEFAULT_SDK_DIR",
    "SDK_ENV",
    "SDK_REQUIREMENT",
    "GatewayFailure",
    "GatewaySettings",
    "InstanceGateway",
    "install_sdk",
    "sdk_python",
    "shared_gateway",
]

SDK_ENV = "KMSBEAM_INSTANCE_SDK"
SDK_REQUIREMENT = "alibabacloud-dkms-gcs==1.0.2"
DEFAULT_SDK_DIR = Path("~/.local/share/kmsbeam/instance-sdk")
HELPER = Path(__file__).with_name("_instance_helper.py")
CONNECT_TIMEOUT_MS = 5_000
READ_TIMEOUT_MS = 10_000
_HIDDEN_ENV = ("KMSBEAM_KMS_CLIENT_KEY",)  # prefixes the helper's environment goes without


def sdk_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The instance SDK's virtualenv: ``$KMSBEAM_INSTANCE_SDK`` or the default."""
    env = os.environ if environ is None else environ
    return Path(env.get(SDK_ENV) or DEFAULT_SDK_DIR).expanduser()


def sdk_python(environ: Mapping[str, str] | None = None) -> Path:
    """The interpreter of the instance SDK's virtualenv.

    Raises:
        ConfigurationError: it is not installed, saying how to install it.
    """
    where = sdk_dir(environ)
    python = where / "bin" / "python"
    if not python.is_file():
        raise ConfigurationError(
            f"the KMS instance SDK is not installed (no {python}): run `kmsbeam instance-sdk "
            f"install` (a virtualenv with {SDK_REQUIREMENT}), or point {SDK_ENV} at such a "
            "virtualenv; it is kept apart from kmsbeam because it needs protobuf 3"
        )
    return python


def install_sdk(where: Path | None = None, *, quiet: bool = True) -> Path:
    """Create the instance SDK's virtualenv at ``where`` (default: ``sdk_dir()``) and install
    the SDK into it with its own declared dependencies; returns its interpreter.

    Raises:
        ConfigurationError: the virtualenv or the install failed (pip's exit status).
    """
    target = (where or sdk_dir()).expanduser().absolute()
    python = target / "bin" / "python"
    if not python.is_file():
        done = subprocess.run([sys.executable, "-m", "venv", str(target)], check=False)
        if done.returncode != 0:
            raise ConfigurationError(f"cannot create a virtualenv at {target}")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", SDK_REQUIREMENT]
    done = subprocess.run(pip + (["-q"] if quiet else []), check=False)
    if done.returncode != 0:
        raise ConfigurationError(f"pip could not install {SDK_REQUIREMENT} into {target}")
    check = subprocess.run([str(python), "-c", "import sdk.client, openapi.models"], check=False)
    if check.returncode != 0:
        raise ConfigurationError(f"{SDK_REQUIREMENT} was installed into {target} but does not import")
    return python


@dataclass(frozen=True)
class GatewaySettings:
    """What one helper is configured with. ``password`` and ``client_key_content`` never
    appear in ``repr`` and this object never pickles."""

    endpoint: str
    ca_file: str | None
    ca_content: str | None
    client_key_file: str | None
    client_key_content: str | None = field(repr=False)
    password: str = field(repr=False)

    def __reduce__(self) -> NoReturn:
        raise TypeError("gateway settings hold a ClientKey password and never pickle")


class GatewayFailure(Exception):
    """A call the helper answered with an error (``kind``: service, connection or setup)."""

    def __init__(self, kind: str, message: str, code: str | None = None, status: int | None = None,
                 request_id: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.kind, self.message, self.code = kind, message, code
        self.status, self.request_id = status, request_id


class InstanceGateway:
    """One helper process running the instance SDK for one gateway (in this process).

    ``call(action, request)`` sends one SDK call and returns the answer's fields (bytes
    fields decoded). Thread-safe (calls are serialised). A helper that died is restarted at
    the next call (its failure is a ``GatewayFailure`` of kind ``connection``).
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: str | None = None

    def __repr__(self) -> str:
        return f"InstanceGateway({self._settings.endpoint})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an instance gateway holds a helper process and never pickles")

    def call(self, action: str, request: Mapping[str, Any], byte_fields: tuple[str, ...] = ()) -> dict[str, Any]:
        fields = {k: (base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v)
                  for k, v in request.items() if v is not None}  # fmt: skip
        with self._lock:
            answer = self._exchange({"op": "call", "action": action, "request": fields})
        ok = answer.get("ok")
        if not isinstance(ok, dict):
            raise _failure(answer)
        out: dict[str, Any] = dict(ok)
        for name in ("plaintext", "ciphertext_blob", "iv"):
            if isinstance(out.get(name), str):
                out[name] = base64.b64decode(out[name])
        return out

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the helper process -------------------------------------------------------------------
    def _exchange(self, message: Mapping[str, Any]) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            return _send(proc.stdin, proc.stdout, message)
        except (OSError, ValueError) as exc:
            self._stop()
            raise GatewayFailure("connection", f"the instance SDK helper stopped ({type(exc).__name__})") from None

    def _start(self) -> None:
        self._stop()
        s = self._settings
        python = sdk_python()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDDEN_ENV)}
        proc = subprocess.Popen(  # noqa: S603 (our own helper script, by absolute path)
            [str(python), "-I", str(HELPER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8", env=env, close_fds=True,
        )  # fmt: skip
        ca_file = s.ca_file
        if ca_file is None and s.ca_content is not None:
            self._tmp = tempfile.mkdtemp(prefix="kmsbeam-instance-ca-")
            ca_file = os.path.join(self._tmp, "ca.pem")
            fd = os.open(ca_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(s.ca_content)
        init = {"op": "init", "endpoint": s.endpoint, "ca_file": ca_file,
                "client_key_file": s.client_key_file, "client_key_content": s.client_key_content,
                "password": s.password, "connect_timeout_ms": CONNECT_TIMEOUT_MS,
                "read_timeout_ms": READ_TIMEOUT_MS}  # fmt: skip
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            answer = _send(proc.stdin, proc.stdout, init)
        except (OSError, ValueError):
            self._stop()
            raise GatewayFailure("setup", "the instance SDK helper did not start") from None
        if not isinstance(answer.get("ok"), dict):
            self._stop()
            raise _failure(answer)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _send(stdin: IO[str], stdout: IO[str], message: Mapping[str, Any]) -> dict[str, Any]:
    stdin.write(json.dumps(message) + "\n")
    stdin.flush()
    line = stdout.readline()
    if not line:
        raise ValueError("no answer")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ValueError("not an answer")
    return answer


def _failure(answer: Mapping[str, Any]) -> GatewayFailure:
    err = answer.get("error")
    err = err if isinstance(err, dict) else {}
    status = err.get("status")
    return GatewayFailure(
        str(err.get("type") or "setup"),
        str(err.get("message") or "the instance SDK helper gave no answer"),
        code=str(err["code"]) if err.get("code") else None,
        status=status if isinstance(status, int) else None,
        request_id=str(err["request_id"]) if err.get("request_id") else None,
    )


def shared_gateway(settings: GatewaySettings) -> InstanceGateway:
    """This process's helper for ``settings`` (started at its first call)."""
    return process.shared("alikms.instance-gateway", settings, lambda: InstanceGateway(settings),
                          close=InstanceGateway.close)  # fmt: skip
