"""Every KMS error the emulator can answer, mapped to kmsbeam's error tree with its code and
request id; and the mapping table for codes the emulator never sends, on the SDK's own
exception classes."""

from __future__ import annotations

import re

import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from darabonba.exceptions import UnretryableException
from darabonba.policy.retry import RetryPolicyContext

from kmsbeam import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    KeySourceError,
    KmsBeamError,
    open_key_source,
)
from kmsbeam.alikms._errors import classify
from kmsbeam.alikms._retry import Transient
from kmsbeam.emulator import EmulatorServer
from tests.alikms.conftest import ADMIN, NO_DECRYPT, key_uri, make_source, use_credentials

RID = re.compile(r"request id ([0-9A-F-]{36})")


def check_request_id(error: KmsBeamError) -> None:
    """The request id is an attribute and, in words, in the message."""
    rid = getattr(error, "request_id", None)
    found = RID.search(str(error))
    assert rid and found and found.group(1) == rid


def test_unknown_alias_is_key_not_found_with_a_clear_message(server: EmulatorServer) -> None:
    source = make_source(server, "alias/does-not-exist")
    with pytest.raises(KeyNotFoundError) as info:
        source.generate_data_key()
    error = info.value
    assert type(error) is KeyNotFoundError and error.code == "Forbidden.AliasNotFound"
    assert "alias/does-not-exist" in str(error) and server.endpoint in str(error)
    assert "never creates keys" in str(error)
    check_request_id(error)
    assert source.stats()["attempts"] == 1  # not retried
    assert isinstance(error.__cause__, ClientException)  # raised from the SDK error


def test_unknown_key_id_is_key_not_found(server: EmulatorServer) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        make_source(server, "0b7d3c44-0000-4000-8000-000000000000").describe_key()
    assert info.value.code == "Forbidden.KeyNotFound" and "check the key id" in str(info.value)
    check_request_id(info.value)


@pytest.mark.parametrize("state", ["Disabled", "PendingDeletion"])
def test_unusable_key_is_key_disabled(server: EmulatorServer, state: str) -> None:
    source = make_source(server)
    wrapped = source.generate_data_key().wrapped
    if state == "Disabled":
        server.engine.disable_key("alias/pii")
    else:
        server.engine.schedule_key_deletion("alias/pii", 7)
    for call in (source.generate_data_key, lambda: source.decrypt_data_key(wrapped)):
        with pytest.raises(KeyDisabledError) as info:
            call()
        assert info.value.code == f"Rejected.{state}" and "cannot be used" in str(info.value)
        check_request_id(info.value)
    assert source.stats()["retries"] == 0
    if state == "Disabled":
        server.engine.enable_key("alias/pii")
    else:
        server.engine.cancel_key_deletion("alias/pii")
    assert len(source.decrypt_data_key(wrapped)) == 32


def test_policy_denial_is_access_denied(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped = open_key_source(key_uri(server)).generate_data_key().wrapped
    use_credentials(monkeypatch, *NO_DECRYPT)
    source = make_source(server)
    assert len(source.generate_data_key().plaintext) == 32  # allowed
    with pytest.raises(AccessDeniedError) as info:
        source.decrypt_data_key(wrapped)  # not allowed
    error = info.value
    assert error.code == "Forbidden.NoPermission" and "kms:Decrypt" in str(error)
    assert "check the credentials and the RAM policy" in str(error)
    check_request_id(error)
    assert source.stats()["retries"] == 0
    # describe_key without ListAliasesByKeyId permission falls back to the URI's alias
    assert source.describe_key().aliases == ("alias/pii",)


@pytest.mark.parametrize(
    ("ak", "secret", "code"),
    [
        (ADMIN[0], "a-wrong-secret", "SignatureDoesNotMatch"),
        ("nobody-knows-me", "whatever", "InvalidAccessKeyId.NotFound"),
    ],
)
def test_bad_credentials_are_access_denied(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch, ak: str, secret: str, code: str
) -> None:
    use_credentials(monkeypatch, ak, secret)
    source = make_source(server)
    with pytest.raises(AccessDeniedError) as info:
        source.generate_data_key()
    assert info.value.code == code and not info.value.retryable
    check_request_id(info.value)
    assert "a-wrong-secret" not in str(info.value)


def test_invalid_ciphertext_is_the_opaque_authentication_error(server: EmulatorServer) -> None:
    source = make_source(server)
    wrapped = bytearray(source.generate_data_key().wrapped)
    wrapped[-1] ^= 0x80
    with pytest.raises(AuthenticationError) as info:
        source.decrypt_data_key(bytes(wrapped))
    assert str(info.value) == str(AuthenticationError()) and info.value.code == "InvalidCiphertext"
    assert getattr(info.value, "request_id", None) and "request id" not in str(info.value)


def _context(exc: BaseException) -> RetryPolicyContext:
    return RetryPolicyContext(retries_attempted=1, exception=exc)


def client_error(code: str, status: int = 400) -> ClientException:
    return ClientException(
        status_code=status, code=code, message=f"code: {status}, m request id: R-1",
        data={"RequestId": "R-1", "Code": code, "Message": f"the {code} message"}, request_id="R-1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("Forbidden.NoPermission", 403, AccessDeniedError),
        ("InvalidAccessKeyId.Inactive", 400, AccessDeniedError),
        ("InvalidSecurityToken.Expired", 400, AccessDeniedError),
        ("IllegalTimestamp", 400, AccessDeniedError),
        ("Forbidden.KeyNotFound", 404, KeyNotFoundError),
        ("Forbidden.AliasNotFound", 404, KeyNotFoundError),
        ("Rejected.Disabled", 409, KeyDisabledError),
        ("Rejected.PendingDeletion", 409, KeyDisabledError),
        ("Rejetced.PendingDeletion", 409, KeyDisabledError),  # as Alibaba's docs spell it
        ("Rejected.PendingImport", 409, KeyDisabledError),
        ("InvalidCiphertext", 400, AuthenticationError),
        ("InvalidParameter", 400, ConfigurationError),
        ("MissingParameter", 400, ConfigurationError),
        ("InvalidParameter.KeySpec", 400, ConfigurationError),
        ("AliasAlreadyExists", 400, KeySourceError),
    ],
)
def test_mapping_table(code: str, status: int, expected: type[KmsBeamError]) -> None:
    mapped = classify(client_error(code, status), "the KMS", "GenerateDataKey", "alias/pii")
    assert type(mapped) is expected and mapped.code == code
    assert getattr(mapped, "request_id") == "R-1"
    if expected is not AuthenticationError:
        assert "R-1" in str(mapped) and f"the {code} message" in str(mapped)


@pytest.mark.parametrize(
    "exc",
    [
        ThrottlingException(
            status_code=429, code="Rejected.Throttling", request_id="R-2", retry_after=1500
        ),
        client_error("Rejected.Throttling", 429),
        client_error("Throttling.User", 400),
        client_error("SignatureNonceUsed", 400),
        ServerException(status_code=503, code="ServiceUnavailableTemporary", request_id="R-3"),
        ServerException(status_code=500, code="InternalFailure", request_id="R-4"),
        ServerException(status_code=502, code="BadGateway", request_id="R-5"),
        UnretryableException(_context(ConnectionResetError(104, "Connection reset by peer"))),
        UnretryableException(_context(ValueError("Expecting value: line 1 column 1"))),
    ],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    mapped = classify(exc, "the KMS", "Decrypt", "")
    assert isinstance(mapped, Transient)
    if isinstance(exc, ThrottlingException):
        assert mapped.retry_after == 1.5 and mapped.code == "Rejected.Throttling"
        assert mapped.request_id == "R-2"


def test_missing_credentials_say_what_to_set() -> None:
    chain = CredentialException("unable to load credentials from any of the providers")
    wrapped = UnretryableException(_context(chain))
    for exc in (chain, wrapped, ClientException(code="InvalidCredentials")):
        mapped = classify(exc, "the KMS", "Decrypt", "")
        assert isinstance(mapped, AccessDeniedError) and mapped.code == "InvalidCredentials"
        assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in str(mapped)
