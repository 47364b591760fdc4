"""``EmulatorServer``: the KMS engine behind a threaded HTTP server speaking Alibaba KMS.

It wires the parts together (keystore and engine, access keys, audit log, faults, the HTTP
server of ``_http``) and owns their lifecycle: ``start`` binds and serves on a thread,
``stop`` closes every open connection, waits for calls in flight, then closes the files.
A background thread rotates keys whose automatic rotation is due.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from kmsbeam.emulator._audit import AuditLog
from kmsbeam.emulator._faults import FaultInjector, Faults
from kmsbeam.emulator._gateway_actions import GatewayService
from kmsbeam.emulator._gateway_keys import ClientKeys
from kmsbeam.emulator._gateway_server import GatewayServer
from kmsbeam.emulator._gateway_tls import CA_CERT_FILENAME, ensure_ca, server_context
from kmsbeam.emulator._http import HTTPServer, Limits
from kmsbeam.emulator._nonces import NONCES_FILENAME
from kmsbeam.emulator._service import Service
from kmsbeam.emulator._signature import AccessKey, Authenticator
from kmsbeam.errors import ConfigurationError
from kmsbeam.kms import KeyStore, KmsEngine

__all__ = ["AUDIT_FILENAME", "EmulatorServer"]

AUDIT_FILENAME = "audit.jsonl"
DEFAULT_ACCOUNT = "1" * 16
_log = logging.getLogger("kmsbeam.emulator")


def _access_keys(keys: Mapping[str, str] | Iterable[AccessKey]) -> dict[str, AccessKey]:
    if isinstance(keys, Mapping):
        items = [AccessKey(k, v) if isinstance(v, str) else v for k, v in keys.items()]
    else:
        items = list(keys)
    out: dict[str, AccessKey] = {}
    for key in items:
        if not isinstance(key, AccessKey):
            raise ConfigurationError("access keys are AccessKey objects or {id: secret}")
        if key.access_key_id in out:
            raise ConfigurationError(f"the access key {key.access_key_id} is given twice")
        out[key.access_key_id] = key
    if not out:
        raise ConfigurationError("the emulator needs at least one access key")
    return out


class EmulatorServer:
    """The kmsbeam KMS emulator: Alibaba Cloud KMS API 2016-01-20 over HTTP on ``host:port``.

    Any program using the official SDK works unmodified with ``Config(endpoint=
    server.endpoint, protocol="http", access_key_id=..., access_key_secret=...)`` (see
    ``sdk_config``). Keys live in ``data_dir/keystore.db``, the same SQLite keystore as
    ``local:``, so they survive restarts, as does the replay window of signature nonces
(``data_dir/nonces.log``); every call is appended to the audit log.

    Args:
        data_dir: the keystore directory (created with mode 0700 if missing).
        access_keys: ``{id: secret}`` or ``AccessKey`` objects (with policies, STS tokens).
        host: the address to bind; loopback by default. Anything else exposes the emulator
            (and its keys) to the network: only for a container (see ``docker/emulator``).
        port: the port; 0 picks a free one (read it from ``endpoint`` after ``start``).
        region, account: used in ARNs (``acs:kms:REGION:ACCOUNT:key/ID``).
        audit_log: the JSON-lines audit file (default ``data_dir/audit.jsonl``, mode 0600).
        faults: faults to inject (``Faults``); settable later through ``faults``.
        rotation_check_seconds: how often keys due for automatic rotation are rotated;
            ``None`` never.
        clock: seconds since the epoch, for signature windows and the engine; for tests.
        max_nonces: signature nonces remembered at most (see ``_signature``).
        max_connections, workers, request_timeout, idle_timeout: the HTTP server's bounds
            (see ``_http``): open connections (past it the one waiting longest is closed),
            threads serving calls, seconds for a request to arrive whole (and its response
            to be taken), seconds an idle keep-alive connection is kept.
        instance_gateway: also serve the KMS 3.0 instance API (``_gateway_actions``) over
            HTTPS on ``host:instance_port`` (0: a free port), for the official instance SDK
            ``alibabacloud-dkms-gcs``: same engine, keys, aliases and audit log. See
            ``instance_endpoint``, ``instance_ca_file`` and ``issue_client_key``.
        instance_max_connections: open gateway connections at most (one thread each).

    Use it as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        access_keys: Mapping[str, str] | Iterable[AccessKey],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "cn-hangzhou",
        account: str = DEFAULT_ACCOUNT,
        audit_log: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        rotation_check_seconds: float | None = 60.0,
        clock: Callable[[], float] = time.time,
        max_nonces: int = 1_000_000,
        max_connections: int = 1024,
        workers: int = 16,
        request_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        instance_gateway: bool = False,
        instance_port: int = 0,
        instance_max_connections: int = 64,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError("the port is a number from 0 to 65535")
        if not isinstance(host, str) or not host:
            raise ConfigurationError("the host is an IP address or name to bind")
        if not isinstance(instance_port, int) or not 0 <= instance_port <= 65535:
            raise ConfigurationError("the instance port is a number from 0 to 65535")
        if not 1 <= instance_max_connections <= 4096:
            raise ConfigurationError("instance_max_connections is 1 to 4096")
        self._keys = _access_keys(access_keys)
        self._limits = Limits(max_connections, workers, request_timeout, idle_timeout)
        self.host, self._port = host, port
        self.region = region
        self.data_dir = Path(data_dir).expanduser().absolute()
        self._rotation_seconds = rotation_check_seconds
        store = KeyStore(self.data_dir)
        self.engine = KmsEngine(store, clock=clock, region=region, account=account)
        try:
            audit_path = self.data_dir / AUDIT_FILENAME if audit_log is None else audit_log
            self.audit = AuditLog(audit_path)
        except BaseException:
            store.close()
            raise
        try:
            authenticator = Authenticator(self._keys, clock=clock, max_nonces=max_nonces,
                                          nonce_file=self.data_dir / NONCES_FILENAME)  # fmt: skip
        except BaseException:
            self.audit.close()
            store.close()
            raise
        self._service = Service(self.engine, authenticator, audit=self.audit, clock=clock)
        self._instance = (instance_port, instance_max_connections) if instance_gateway else None
        self._clock = clock
        self._client_keys: ClientKeys | None = None
        self._gateway: GatewayServer | None = None
        self.faults = faults
        self._http: HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        where = self.endpoint if self._http is not None else "not started"
        return f"EmulatorServer({str(self.data_dir)!r}, {where})"

    @property
    def faults(self) -> Faults | None:
        injector = self._service.faults
        return None if injector is None else injector.faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        self._service.faults = None if faults is None else FaultInjector(faults)

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the emulator is not started")
        return int(self._http.server_address[1])

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` for the SDK's ``Config(endpoint=...)``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def instance_endpoint(self) -> str:
        """``HOST:PORT`` of the instance gateway, for the instance SDK's ``Config(endpoint=)``."""
        if self._gateway is None:
            raise RuntimeError("the instance gateway is not started (instance_gateway=True)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._gateway.server_address[1]}"

    @property
    def instance_ca_file(self) -> str:
        """The PEM file of the CA that signs the gateway's certificate (``ca_file_path``);
        created if missing (kept in the data dir across restarts)."""
        if self._instance is None:
            raise RuntimeError("the instance gateway is off (instance_gateway=True)")
        ensure_ca(self.data_dir)
        return str(self.data_dir / CA_CERT_FILENAME)

    @property
    def client_keys(self) -> ClientKeys:
        if self._client_keys is None:
            self._client_keys = ClientKeys(self.data_dir, clock=self._clock)
        return self._client_keys

    def issue_client_key(self, path: str | os.PathLike[str], password: str, *,
                         keys: Iterable[str] | None = None) -> str:  # fmt: skip
        """Write a new ClientKey file (JSON, mode 0600, PKCS#12 under ``password``) to
        ``path`` for the instance SDK's ``Config(client_key_file=, password=)``; its id.

        ``keys``: the key ids or ``alias/NAME`` it may use (default: all); others answer
        ``Forbidden.NoPermission``. Kept in the data dir: it works after a restart.
        """
        return self.client_keys.issue(path, password, keys=keys)

    @staticmethod
    def issue_client_key_in(data_dir: str | os.PathLike[str], path: str | os.PathLike[str],
                            password: str, *, keys: Iterable[str] | None = None) -> str:  # fmt: skip
        """``issue_client_key`` for the data dir of a server not running here (or not yet):
        a gateway serving ``data_dir`` in another process accepts it at its first use."""
        return ClientKeys(data_dir).issue(path, password, keys=keys)

    def start(self) -> EmulatorServer:
        if self._http is not None or self._stopped.is_set():
            raise RuntimeError("an EmulatorServer starts once; create a new one to restart")
        try:
            self._http = HTTPServer((self.host, self._port), self._service, self._limits)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self.host}:{self._port}: "
                                     f"{exc.strerror or exc}") from None  # fmt: skip
        if self._instance is not None:
            try:
                self._gateway = self._start_gateway(*self._instance)
            except BaseException:
                self._http.server_close()
                raise
        serve = threading.Thread(target=self._http.serve, name="kms-emulator", daemon=True)
        self._threads = [serve]
        if self._rotation_seconds is not None:
            self._threads.append(threading.Thread(target=self._rotate, name="kms-emulator-rotation",
                                                  daemon=True))  # fmt: skip
        for thread in self._threads:
            thread.start()
        return self

    def _start_gateway(self, port: int, most: int) -> GatewayServer:
        service = GatewayService(self.engine, self.client_keys, audit=self.audit,
                                 clock=self._clock)  # fmt: skip
        context = server_context(self.data_dir, self.host)
        try:
            gateway = GatewayServer((self.host, port), service, context, max_connections=most,
                                    request_timeout=self._limits.request_timeout)  # fmt: skip
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self.host}:{port}: "
                                     f"{exc.strerror or exc}") from None  # fmt: skip
        gateway.start()
        return gateway

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close open connections, wait for calls in flight, close files."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._gateway is not None:
            self._gateway.stop(timeout)
        if self._http is not None:
            self._http.stop(timeout)
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout)
        self._service.authenticator.close()
        self.audit.close()
        self.engine.store.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    def sdk_config(self, access_key_id: str | None = None) -> Any:
        """An ``alibabacloud_tea_openapi.models.Config`` for this server and access key."""
        from alibabacloud_tea_openapi.models import Config

        key = self._keys[access_key_id] if access_key_id else next(iter(self._keys.values()))
        return Config(endpoint=self.endpoint, protocol="http", region_id=self.region,
                      access_key_id=key.access_key_id, access_key_secret=key.secret,
                      security_token=key.security_token)  # fmt: skip

    def _rotate(self) -> None:
        interval = self._rotation_seconds or 60.0
        while True:
            try:
                self.engine.rotate_due_keys()
            except Exception as exc:  # keep serving; the next round retries
                _log.warning("automatic key rotation failed: %s", type(exc).__name__)
            if self._stopped.wait(interval):
                return
