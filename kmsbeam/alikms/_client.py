"""Endpoints of the Alibaba KMS protocol and one official SDK client per endpoint per process.

=========================================  =============================================
key URI                                    SDK ``Config``
=========================================  =============================================
``alibaba-kms://REGION/KEY``               ``https://kms.REGION.aliyuncs.com``
``alibaba-kms://REGION/KEY?endpoint=H:P``  ``https://H:P`` (a dedicated KMS instance)
``...&ca=/path/ca.pem``                    ``Config.ca``: the instance's CA file
``kms-emulator://HOST:PORT/KEY``           ``http://HOST:PORT``; ``?region=`` optional
=========================================  =============================================

Clients are cached per endpoint (the URI without its key) per process (``kmsbeam.process``),
so all keys of an endpoint share one client and its connection pool. The SDK client is used
from many threads at once (it builds a new request per call). A forked child builds its own
clients and starts the SDK's pooled HTTP sessions (``darabonba.core.DaraCore._sessions``,
shared process-wide by the SDK) empty, so a child never writes to its parent's sockets.
A client's first call runs alone (``SdkClient.run``): the SDK builds an endpoint's pooled
session on first use without a lock, so concurrent first calls would each build one, keep
the last and leave the others' connections unused.

The SDK (~0.7 s to import) is imported when the first client is built, not with kmsbeam.

Caveat: the emulator speaks plain HTTP. Point ``kms-emulator://`` at loopback or a private
test network, never with production credentials.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from kmsbeam import process
from kmsbeam.alikms._credentials import sdk_credentials
from kmsbeam.errors import ConfigurationError
from kmsbeam.keys.uri import KeyUri

__all__ = ["Endpoint", "SdkClient", "clear_clients", "endpoint_for", "sdk_module", "shared_client"]

CONNECT_TIMEOUT_MS = 5_000
READ_TIMEOUT_MS = 10_000
_REGION = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")
_HOST_PORT = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)(:\d{1,5})?$"
)


def sdk_module(name: str) -> Any:
    """Import a module of the Alibaba SDKs (untyped: its names are ``Any`` to mypy)."""
    return importlib.import_module(name)


@dataclass(frozen=True)
class Endpoint:
    """Where a key source's calls go (no key, no credentials)."""

    scheme: str
    host: str
    protocol: str
    region: str | None = None
    ca: str | None = None

    @property
    def where(self) -> str:
        """The endpoint as messages name it."""
        if self.scheme == "kms-emulator":
            return f"the kms-emulator at {self.host}"
        if self.host == f"kms.{self.region}.aliyuncs.com":
            return f"Alibaba Cloud KMS ({self.region})"
        return f"Alibaba Cloud KMS at {self.host} ({self.region})"


def endpoint_for(uri: KeyUri) -> Endpoint:
    """The endpoint an ``alibaba-kms`` or ``kms-emulator`` key URI names.

    Raises:
        ConfigurationError: a bad region, endpoint or CA file.
    """
    if uri.scheme == "kms-emulator":
        region = uri.param("region") or None
        if region is not None and not _REGION.match(region):
            raise ConfigurationError(f"bad region {region!r} in a kms-emulator key URI")
        return Endpoint("kms-emulator", uri.location, "http", region)
    if uri.scheme != "alibaba-kms":
        raise ConfigurationError(f"not an Alibaba KMS key URI: {uri.scheme}:")
    region = uri.location
    if not _REGION.match(region):
        raise ConfigurationError(
            f"bad region {region!r} in an alibaba-kms key URI: expected e.g. cn-hangzhou"
        )
    host = uri.param("endpoint") or f"kms.{region}.aliyuncs.com"
    if not _HOST_PORT.match(host):
        raise ConfigurationError(
            "endpoint= in an alibaba-kms key URI is HOST or HOST:PORT, without a scheme or path "
            "(e.g. kst-hzz1234.cryptoservice.kms.aliyuncs.com)"
        )
    ca = uri.param("ca") or None
    if ca is not None:
        path = Path(ca).expanduser()
        if not path.is_absolute() or not path.is_file():
            raise ConfigurationError(
                f"ca= in an alibaba-kms key URI must be the absolute path of an existing CA "
                f"certificate file (PEM); {ca!r} is not one"
            )
        ca = str(path)
    return Endpoint("alibaba-kms", host, "https", region, ca)


class SdkClient:
    """The official SDK client of one endpoint in one process (never pickled or printed).

    Attributes:
        sdk: the ``alibabacloud_kms20160120.client.Client``.
        credentials: where its credentials came from ("environment", ...), never what they are.
        pid: the process that built it.
    """

    __slots__ = ("_first", "_warm", "credentials", "endpoint", "pid", "sdk")

    def __init__(self, endpoint: Endpoint) -> None:
        kms = sdk_module("alibabacloud_kms20160120.client")
        openapi = sdk_module("alibabacloud_tea_openapi.models")
        process.shared("alikms.sdk-pool", None, _own_sdk_pool)  # once per process
        self.credentials, creds = sdk_credentials()
        config = openapi.Config(
            endpoint=endpoint.host,
            protocol=endpoint.protocol,
            region_id=endpoint.region,
            ca=endpoint.ca,
            connect_timeout=CONNECT_TIMEOUT_MS,
            read_timeout=READ_TIMEOUT_MS,
            user_agent="kmsbeam",
            **creds,
        )
        self.sdk: Any = kms.Client(config)
        self.endpoint = endpoint
        self.pid = os.getpid()
        self._first = threading.Lock()
        self._warm = False

    def run(self, call: Callable[[Any], Any]) -> Any:
        """``call(self.sdk)``; until one call has returned, one at a time (see the module)."""
        if self._warm:
            return call(self.sdk)
        with self._first:
            result = call(self.sdk)
            self._warm = True
            return result

    def __repr__(self) -> str:
        return f"SdkClient({self.endpoint.where}, credentials from {self.credentials})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an SDK client holds credentials and never pickles")


def shared_client(endpoint: Endpoint) -> SdkClient:
    """This process's client for ``endpoint`` (built on first use)."""
    return process.shared("alikms.client", endpoint, lambda: SdkClient(endpoint))


def clear_clients() -> None:
    """Forget this process's clients: the next call builds new ones (and re-reads the
    credential environment variables). Clients in use stay usable."""
    process.discard("alikms.client")


def _own_sdk_pool() -> dict[str, Any]:
    """Start this process's SDK connection pool empty (``DaraCore._sessions`` is process-wide
    in the SDK); returns the sessions found there (a parent's), kept but never used."""
    core = sys.modules.get("darabonba.core")
    found: dict[str, Any] = {}
    if core is not None and isinstance(getattr(core.DaraCore, "_sessions", None), dict):
        found, core.DaraCore._sessions = core.DaraCore._sessions, {}
    return found
