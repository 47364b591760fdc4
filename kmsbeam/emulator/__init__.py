"""The kmsbeam KMS emulator: an HTTP server speaking Alibaba Cloud KMS API 2016-01-20, and
optionally the KMS 3.0 instance API (the instance gateway) over HTTPS.

The official SDK (``alibabacloud-kms20160120``) works against it unmodified, with ACS3
signatures, RAM-style policies per access key, an audit log, fault injection and the same
SQLite keystore as ``local:``::

    from kmsbeam.emulator import AccessKey, EmulatorServer, Faults

    with EmulatorServer("./kms-data", {"dev": "devsecret"}) as server:
        client = Client(server.sdk_config())          # or Config(endpoint=server.endpoint,
        ...                                           #   protocol="http", access_key_id=...)

From the shell: ``kmsbeam emulator serve --port 9800 --data DIR --access-key-file FILE``
(lines ``AK:SECRET[:POLICYFILE]``, mode 0600; or ``KMSBEAM_EMULATOR_ACCESS_KEYS``; see
``kmsbeam.pipelines.emulator_cmd``); in a container: ``docker/emulator/Dockerfile``. In
pytest, ``-p kmsbeam.emulator.pytest_plugin`` gives a session fixture ``kms_emulator``.
Policies: ``Policy`` (``_policy``); audit records: ``_audit``; faults: ``Faults``.

The instance gateway (``EmulatorServer(..., instance_gateway=True, instance_port=0)``) serves
what the official instance SDK ``alibabacloud-dkms-gcs`` speaks: ``POST /`` over HTTPS,
protobuf bodies, requests signed with a ClientKey (RSA). It shares the engine, keys, aliases
and audit log; ``AdvanceGenerateDataKey``, ``AdvanceEncrypt``, ``AdvanceDecrypt`` (and the
plain ``GenerateDataKey``, ``Encrypt``, ``Decrypt``) bind the request's ``Aad`` bytes::

    with EmulatorServer(DIR, {"dev": "devsecret"}, instance_gateway=True) as server:
        server.issue_client_key("ck.json", password, keys=["alias/pii"])  # default: all keys
        Config(protocol="https", endpoint=server.instance_endpoint,
               client_key_file="ck.json", password=password,
               ca_file_path=server.instance_ca_file)

The CA (``DIR/gateway-ca.pem``, key 0600) and ClientKeys (public halves in
``DIR/gateway-client-keys.json``) survive restarts;
``EmulatorServer.issue_client_key_in(DIR, ...)`` issues one without a server (a running
one sees it at its first use). From the shell: ``serve ... --instance-port N`` and ``kmsbeam emulator
client-key --data DIR --out FILE``. Its error codes (``InvalidApiName``,
``SignatureNotMatch`` 401, ``Unauthorized`` 404, ...) are tabled in ``_gateway_actions``;
the wire codec is ``_gateway_wire``, TLS ``_gateway_tls``, ClientKeys and signatures
``_gateway_keys``, the HTTPS server ``_gateway_server``.

Error codes of the 2016-01-20 API (HTTP status) beyond the engine's (``Forbidden.KeyNotFound`` 404,
``Forbidden.AliasNotFound`` 404, ``Rejected.Disabled``/``PendingDeletion``/``PendingImport``
409, ``AliasAlreadyExists`` 400, ``InvalidCiphertext`` 400, ``InvalidParameter`` 400):

=====================================  ===  ============================================
``IncompleteSignature``                400  no/garbled ``Authorization``, headers unsigned
``InvalidAccessKeyId.NotFound``        404  unknown access key
``SignatureDoesNotMatch``              400  wrong signature or body hash
``InvalidSecurityToken.*``             400  STS token missing/wrong (Malformed,
                                            MismatchWithAccessKey) or Expired
``IllegalTimestamp``                   400  ``x-acs-date`` more than 15 min off
``SignatureNonceUsed``                 400  a replayed ``x-acs-signature-nonce``
``InvalidAction.NotFound``             404  unknown ``x-acs-action`` (or path not ``/``)
``InvalidVersion``                     400  ``x-acs-version`` is not 2016-01-20
``UnsupportedHTTPMethod``              400  not POST or GET
``MissingParameter``                   400  a required parameter is absent
``InvalidParameter``                   400  unknown parameter or bad value
``Forbidden.NoPermission``             403  the access key's policy does not allow it
``DryRunOperationError``               400  ``DryRun=true`` and the call would succeed
``Rejected.Throttling``                429  injected (``x-acs-retry-after`` ms) or too
                                            many nonces in the window
``ServiceUnavailableTemporary``        503  injected, or the keystore stayed locked
``InternalFailure``                    500  injected, or an emulator bug
=====================================  ===  ============================================
"""

from kmsbeam.emulator._faults import Faults
from kmsbeam.emulator._policy import Policy
from kmsbeam.emulator._server import AUDIT_FILENAME, EmulatorServer
from kmsbeam.emulator._signature import AccessKey

__all__ = ["AUDIT_FILENAME", "AccessKey", "EmulatorServer", "Faults", "Policy"]
