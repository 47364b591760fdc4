"""Alibaba Cloud OSS for kmsbeam, without Beam: client, bounded-memory transfers, test server.

::

    from kmsbeam.oss import OssConfig, oss_client
    client = oss_client()                       # KMSBEAM_OSS_* + the Alibaba credential chain
    with client.open_write("oss://bucket/x.kmsb", metadata={"kmsbeam-format": "object-v1"}) as f:
        f.write(data)                           # parallel multipart parts, bounded memory
    with client.open_read("oss://bucket/x.kmsb") as f:
        f.seek(1 << 20); f.read(100)            # ranged GETs, resumed after resets

``LoopbackOssServer`` is an OSS-protocol server on 127.0.0.1 (signatures checked, faults
injectable) for testing code that uses OSS, kmsbeam's and your own.
"""

from kmsbeam.oss._client import ObjectInfo, OssClient, clear_clients, oss_client
from kmsbeam.oss._config import ENV_VARS, OssConfig, parse_oss_url
from kmsbeam.oss._download import OssReader
from kmsbeam.oss._errors import OssCredentialsError, OssError, OssUnavailableError
from kmsbeam.oss._server import FAULT_KINDS, OPERATIONS, LoopbackOssServer
from kmsbeam.oss._upload import MultipartWriter

__all__ = [
    "ENV_VARS",
    "FAULT_KINDS",
    "OPERATIONS",
    "LoopbackOssServer",
    "MultipartWriter",
    "ObjectInfo",
    "OssClient",
    "OssConfig",
    "OssCredentialsError",
    "OssError",
    "OssReader",
    "OssUnavailableError",
    "clear_clients",
    "oss_client",
    "parse_oss_url",
]
