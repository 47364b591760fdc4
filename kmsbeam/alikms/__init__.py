"""The Alibaba Cloud KMS key source (alibaba-kms:// and kms-emulator://) over the official SDK.

``AlibabaKmsKeySource`` implements ``kmsbeam.keys.source.KeySource`` with GenerateDataKey,
Decrypt, ReEncrypt, DescribeKey and ListKeyVersions; ``kmsbeam.open_key_source`` returns one
for both schemes (``open_alikms_source``); ``wrapped_key_version`` names the key version of a
wrapped key of kind 0x02 without a call.
Credentials come from the Alibaba credential chain (``ALIBABA_CLOUD_ACCESS_KEY_ID`` /
``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN``, then OIDC, CLI profile, credentials file, ECS
RAM role), never from the key URI. Retries are bounded by ``RetryPolicy`` (defaults from the
``KMSBEAM_KMS_*`` environment variables). ``clear_clients`` drops this process's SDK clients
(the next call re-reads the credential environment).
"""

from __future__ import annotations

from kmsbeam.alikms._client import Endpoint, clear_clients
from kmsbeam.alikms._retry import ENV_VARS as RETRY_ENV_VARS
from kmsbeam.alikms._retry import RetryPolicy
from kmsbeam.alikms._blob import wrapped_key_version
from kmsbeam.alikms._source import AlibabaKmsKeySource, open_alikms_source

__all__ = [
    "RETRY_ENV_VARS",
    "AlibabaKmsKeySource",
    "Endpoint",
    "RetryPolicy",
    "clear_clients",
    "open_alikms_source",
    "wrapped_key_version",
]
