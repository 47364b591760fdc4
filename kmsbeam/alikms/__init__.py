"""The Alibaba Cloud KMS key sources over the official SDKs.

``alibaba-kms://`` and ``kms-emulator://``: the shared gateway (KMS API 2016-01-20, RAM
credentials), below. ``alibaba-kms-instance://``: a KMS 3.0 instance's gateway with a
ClientKey, through the instance SDK run in its own interpreter
(``AlibabaKmsInstanceKeySource``, ``kmsbeam.alikms._instance_source``; install the SDK with
``install_sdk`` / ``kmsbeam instance-sdk install``).

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
from kmsbeam.alikms._instance_blob import instance_wrapped_key_version
from kmsbeam.alikms._instance_sdk import SDK_ENV, SDK_REQUIREMENT, install_sdk, sdk_dir, sdk_python
from kmsbeam.alikms._instance_source import CLIENT_KEY_ENV, AlibabaKmsInstanceKeySource, open_instance_source
from kmsbeam.alikms._source import AlibabaKmsKeySource, open_alikms_source

__all__ = [
    "CLIENT_KEY_ENV",
    "RETRY_ENV_VARS",
    "SDK_ENV",
    "SDK_REQUIREMENT",
    "AlibabaKmsInstanceKeySource",
    "AlibabaKmsKeySource",
    "Endpoint",
    "RetryPolicy",
    "clear_clients",
    "install_sdk",
    "instance_wrapped_key_version",
    "open_alikms_source",
    "open_instance_source",
    "sdk_dir",
    "sdk_python",
    "wrapped_key_version",
]
