"""OSS settings (endpoint, region, signing, multipart, retries) and credentials.

Settings are plain, picklable values (``OssConfig``) read from the environment or given by
the caller (Beam pipeline options end up here); credentials never are: they are resolved in
the process that talks to OSS, from the Alibaba Cloud credential chain:

1. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` + ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (+
   ``ALIBABA_CLOUD_SECURITY_TOKEN`` for STS), read when a client is built;
2. else ``alibabacloud_credentials``' default chain (OIDC, CLI profile, credentials file,
   ECS RAM role), refreshed by that library.

=================================  ==============================================  ========
variable                           meaning                                         default
=================================  ==============================================  ========
``KMSBEAM_OSS_ENDPOINT``           ``https://oss-cn-hangzhou.aliyuncs.com``,       from the
                                   ``http://127.0.0.1:9000`` (IP: path-style)      region
``KMSBEAM_OSS_REGION``             ``cn-hangzhou`` (needed to sign V4)             from host
``KMSBEAM_OSS_AUTH_VERSION``       ``v1`` or ``v4``                                ``v1``
``KMSBEAM_OSS_PART_SIZE``          multipart part size, bytes (>= 100 KiB)         8 MiB
``KMSBEAM_OSS_UPLOAD_THREADS``     parts uploaded in parallel per object           4
``KMSBEAM_OSS_MAX_ATTEMPTS``       attempts per request (5xx, resets, timeouts)    5
``KMSBEAM_OSS_BACKOFF_SECONDS``    first backoff ceiling, doubling per retry       0.2
``KMSBEAM_OSS_CRC``                verify CRC-64 of uploads (``0`` to skip)        ``1``
=================================  ==============================================  ========
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kmsbeam.errors import ConfigurationError

__all__ = ["ENV_VARS", "OssConfig", "credentials_provider", "parse_oss_url"]

ENV_VARS = {
    "KMSBEAM_OSS_ENDPOINT": "endpoint",
    "KMSBEAM_OSS_REGION": "region",
    "KMSBEAM_OSS_AUTH_VERSION": "auth_version",
    "KMSBEAM_OSS_PART_SIZE": "part_size",
    "KMSBEAM_OSS_UPLOAD_THREADS": "upload_threads",
    "KMSBEAM_OSS_MAX_ATTEMPTS": "max_attempts",
    "KMSBEAM_OSS_BACKOFF_SECONDS": "backoff_seconds",
    "KMSBEAM_OSS_CRC": "crc",
}
MIN_PART_SIZE = 100 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$")


def parse_oss_url(url: str) -> tuple[str, str]:
    """``oss://bucket/key`` -> (bucket, key); the key may be empty (the bucket's root).

    Raises:
        ConfigurationError: not an ``oss://`` URL with a valid bucket name.
    """
    if not isinstance(url, str) or not url.startswith("oss://"):
        raise ConfigurationError(f"not an OSS URL (oss://BUCKET/KEY): {url!r}")
    bucket, _, key = url[6:].partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigurationError(f"bad OSS bucket name {bucket!r} in {url!r}")
    return bucket, key


@dataclass(frozen=True)
class OssConfig:
    """How to reach OSS. No secrets: safe to pickle, log and show in display data."""

    endpoint: str = ""
    region: str = ""
    auth_version: str = "v1"
    part_size: int = 8 << 20
    upload_threads: int = 4
    max_attempts: int = 5
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    crc: bool = True
    timeout_seconds: float = 60.0
    read_window: int = 16 << 20

    def __post_init__(self) -> None:
        if self.auth_version not in ("v1", "v4"):
            raise ConfigurationError("the OSS auth version is v1 or v4")
        if self.part_size < MIN_PART_SIZE or self.part_size > 5 << 30:
            raise ConfigurationError("the OSS part size is 100 KiB to 5 GiB")
        if not 1 <= self.upload_threads <= 64 or not 1 <= self.max_attempts <= 100:
            raise ConfigurationError("OSS upload threads are 1 to 64, attempts 1 to 100")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0 or self.read_window < 1:
            raise ConfigurationError("OSS backoff times and the read window must be positive")
        if self.endpoint and not re.match(r"^https?://[^/\s]+/?$", self.endpoint):
            raise ConfigurationError(
                f"bad OSS endpoint {self.endpoint!r}: expected http(s)://HOST[:PORT]"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OssConfig:
        """Defaults, then ``KMSBEAM_OSS_*`` variables, then ``overrides`` (None: not given).

        Raises:
            ConfigurationError: a variable that does not parse.
        """
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for var, name in ENV_VARS.items():
            text = env.get(var, "").strip()
            if not text:
                continue
            try:
                kind = types[name]
                if kind == "bool":
                    values[name] = text.lower() not in ("0", "false", "no", "off")
                elif kind == "int":
                    values[name] = int(text)
                elif kind == "float":
                    values[name] = float(text)
                else:
                    values[name] = text
            except ValueError:
                raise ConfigurationError(f"{var}={text!r} is not a valid {types[name]}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_options(self, **overrides: Any) -> OssConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def resolved_endpoint(self) -> str:
        """The endpoint to use, derived from the region when not given.

        Raises:
            ConfigurationError: neither an endpoint nor a region is configured.
        """
        if self.endpoint:
            return self.endpoint.rstrip("/")
        if self.region:
            return f"https://oss-{self.region}.aliyuncs.com"
        raise ConfigurationError(
            "no OSS endpoint: set KMSBEAM_OSS_ENDPOINT (e.g. https://oss-cn-hangzhou.aliyuncs.com) "
            "or KMSBEAM_OSS_REGION, or pass --oss_endpoint"
        )

    def resolved_region(self) -> str:
        """The region (V4 signing scope): given, or read from an ``oss-REGION`` host."""
        if self.region:
            return self.region
        match = re.match(r"^https?://oss-([a-z0-9\-]+?)(?:-internal)?\.aliyuncs\.com", self.endpoint)
        if match:
            return match.group(1)
        if self.auth_version == "v4":
            raise ConfigurationError("OSS V4 signatures need a region: set KMSBEAM_OSS_REGION")
        return ""


def _credential_error() -> ConfigurationError:
    return ConfigurationError(
        "no Alibaba Cloud credentials for OSS: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET (plus ALIBABA_CLOUD_SECURITY_TOKEN for STS), or "
        "configure the Alibaba credential chain (profile, credentials file, RAM role)"
    )


def credentials_provider(environ: Mapping[str, str] | None = None) -> Any:
    """An ``oss2`` credentials provider for the Alibaba credential chain (see the module).

    Raises:
        ConfigurationError: only one half of the access key is set, or no source has any.
    """
    from oss2.credentials import Credentials, CredentialsProvider, StaticCredentialsProvider

    env = os.environ if environ is None else environ
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
    secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
    token = env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip()
    if key_id and secret:
        return StaticCredentialsProvider(key_id, secret, token)
    if key_id or secret:
        raise ConfigurationError(
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET go together: "
            f"{'the secret' if key_id else 'the key id'} is not set"
        )
    try:
        chain = importlib.import_module("alibabacloud_credentials.client").Client()
    except Exception as exc:  # the chain raises its own types when nothing is configured
        raise _credential_error() from exc

    class _Chain(CredentialsProvider):  # type: ignore[misc]
        def get_credentials(self) -> Any:
            try:
                cred = chain.get_credential()
            except Exception as exc:
                raise _credential_error() from exc
            return Credentials(cred.access_key_id, cred.access_key_secret,
                               cred.security_token or "")  # fmt: skip

        def __repr__(self) -> str:
            return "AlibabaCredentialChain()"

    return _Chain()
