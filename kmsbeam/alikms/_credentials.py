"""The Alibaba Cloud credential chain, resolved when a process builds its KMS client.

Order (the first that provides credentials wins), for ``alibaba-kms://`` and
``kms-emulator://`` alike:

1. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` + ``ALIBABA_CLOUD_ACCESS_KEY_SECRET``, with
   ``ALIBABA_CLOUD_SECURITY_TOKEN`` for temporary (STS) credentials. Read from the environment
   at the moment the client is built, so a test or a launcher may set them late.
2. Otherwise ``alibabacloud_credentials``' default chain: OIDC (``ALIBABA_CLOUD_OIDC_*``,
   ``ALIBABA_CLOUD_ROLE_ARN``), the aliyun CLI profile (``~/.aliyun/config.json``), the
   credentials file (``~/.alibabacloud/credentials.ini`` or ``ALIBABA_CLOUD_CREDENTIALS_FILE``),
   then the ECS RAM role from the instance metadata service. That chain reads its environment
   variables when it is first imported, and it refreshes temporary credentials itself.

Secrets never go in a key URI, and they are handed to the SDK's ``Config`` and nowhere else:
no kmsbeam object keeps, prints or pickles them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from kmsbeam.errors import ConfigurationError

__all__ = ["ENV_ACCESS_KEY_ID", "ENV_ACCESS_KEY_SECRET", "ENV_SECURITY_TOKEN", "sdk_credentials"]

ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"


def sdk_credentials(environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Where the credentials come from (for messages) and the ``Config`` arguments for them.

    Raises:
        ConfigurationError: only one of the access key id and secret variables is set.
    """
    env = os.environ if environ is None else environ
    key_id = env.get(ENV_ACCESS_KEY_ID, "").strip()
    secret = env.get(ENV_ACCESS_KEY_SECRET, "").strip()
    token = env.get(ENV_SECURITY_TOKEN, "").strip()
    if key_id and secret:
        kwargs: dict[str, Any] = {"access_key_id": key_id, "access_key_secret": secret}
        if token:
            kwargs["security_token"] = token
            return "environment (STS token)", kwargs
        return "environment", kwargs
    if key_id or secret:
        missing = ENV_ACCESS_KEY_SECRET if key_id else ENV_ACCESS_KEY_ID
        raise ConfigurationError(
            f"{ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} go together: {missing} is not set"
        )
    chain = importlib.import_module("alibabacloud_credentials.client")
    return "default credential chain", {"credential": chain.Client()}
