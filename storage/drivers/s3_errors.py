"""The one table from S3 (botocore) failures to driver errors."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from storage.errors import KeyBusy, KeyNotFound, StorageUnavailable

# ClientError codes (and bare HTTP statuses, which HEAD answers carry instead of a code).
S3_ERRORS: dict[str, type[Exception]] = {
    "NoSuchKey": KeyNotFound,
    "NotFound": KeyNotFound,
    "404": KeyNotFound,
    "NoSuchUpload": KeyNotFound,
    "PreconditionFailed": KeyBusy,
    "412": KeyBusy,
    "ConditionalRequestConflict": KeyBusy,
    "409": KeyBusy,
    "InvalidPart": KeyBusy,  # a part was overwritten by a racing appender
    "InvalidPartOrder": KeyBusy,
}

# Everything else that reaches us has already been retried by botocore.
_TRANSIENT = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
)


def translate(exc: Exception, key: str) -> Exception:
    """The driver error for a botocore failure on `key` (raise it `from None`)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        cls = S3_ERRORS.get(code)
        if cls is KeyNotFound:
            return KeyNotFound(key)
        if cls is KeyBusy:
            return KeyBusy(key)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return StorageUnavailable(f"storage backend error {code or status} on {key}")
    if isinstance(exc, (*_TRANSIENT, BotoCoreError)):
        return StorageUnavailable(f"storage backend unreachable ({type(exc).__name__})")
    return exc
