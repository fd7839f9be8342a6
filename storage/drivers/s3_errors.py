"""The one table from S3 (botocore) failures to driver errors.

A quota reached or a policy that refuses writes is the operator's to fix, not the client's
fault and not a crash: each becomes a retryable `StorageUnavailable` naming the bucket, the
key prefix and the access key id (never the secret) and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from storage.errors import KeyBusy, KeyNotFound, StorageFull, StorageNotWritable, StorageUnavailable

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

# Refusals for want of space: Ceph RGW's user or bucket quota (403 QuotaExceeded), a full
# cluster, MinIO's drives and bucket quota. Any 507 answer too.
FULL = {"QuotaExceeded", "InsufficientStorage", "InsufficientCapacity", "XMinioStorageFull",
        "XMinioAdminBucketQuotaExceeded"}
DENIED = {"AccessDenied", "403"}
# Operations that write: AccessDenied on one of these means the bucket refuses writes.
# On a read it is not a state of the storage this driver can name (a bad key, a policy on
# one object): it stays a plain backend error.
WRITES = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
          "CompleteMultipartUpload", "AbortMultipartUpload", "DeleteObject", "DeleteObjects"}

# Everything else that reaches us has already been retried by botocore.
_TRANSIENT = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Where the driver writes and as whom: what an operator's message names."""

    name: str
    prefix: str
    access_key_id: Callable[[], str | None]  # credentials may rotate: read when needed

    def describe(self) -> str:
        who = self.access_key_id()
        return (f"bucket {self.name}" + (f" under prefix {self.prefix}" if self.prefix else "")
                + (f" as access key {who}" if who else " without credentials"))


def full(code: str, operation: str, bucket: Bucket) -> StorageFull:
    return StorageFull(f"storage is full (S3 {code} on {operation}) in {bucket.describe()}: "
                       "raise the user's or the bucket's quota or free space; what is stored is "
                       "unharmed and an upload cut short can be resumed")


def not_writable(operation: str, bucket: Bucket) -> StorageNotWritable:
    return StorageNotWritable(
        f"storage cannot be written (S3 AccessDenied on {operation}) in {bucket.describe()}: "
        "grant that access key s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on "
        f"arn:aws:s3:::{bucket.name}/{bucket.prefix}* (and remove any Deny for it in the "
        "bucket policy)")


def translate(exc: Exception, key: str, bucket: Bucket) -> Exception:
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
        if code in FULL or status == 507:
            return full(code or str(status), exc.operation_name, bucket)
        if code in DENIED and exc.operation_name in WRITES:
            return not_writable(exc.operation_name, bucket)
        return StorageUnavailable(f"storage backend error {code or status} on {key}")
    if isinstance(exc, (*_TRANSIENT, BotoCoreError)):
        return StorageUnavailable(f"storage backend unreachable ({type(exc).__name__})")
    return exc
