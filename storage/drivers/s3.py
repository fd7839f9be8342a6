"""S3 driver (boto3): keys are objects under an optional prefix in one bucket.

Appends become S3 multipart uploads whose state lives in the bucket, so any replica continues
any upload. While an object at key K is being appended, K holds a small JSON state record
(marked by the object metadata `appendable`): the multipart upload id, the parts uploaded so far
with their ETags, and the size. Bytes that do not yet fill a part are kept in the bucket at
`K#tail` (`#` never occurs in the registry's keys), never in the process beyond one part.
`seal` uploads the tail as the last part and completes the multipart upload in place, which
replaces the state record with the object itself. Racing appenders cannot corrupt an object:
the state record is replaced only with `If-Match` on its ETag, and S3 checks every part's ETag
at completion.

Every boto3 call runs in this driver's one bounded thread pool; botocore retries transient
failures (throttling, 5xx, dropped connections) with backoff; what still fails is translated
in `s3_errors.py`. A quota reached or a policy refusing writes sets `write_failure`, and
/readyz is not ready until `probe_write` succeeds.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import io
import json
import mmap
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.drivers.base import Observer, Stat, probe_write
from storage.drivers.s3_errors import Bucket, not_writable, translate
from storage.drivers.threads import Threads
from storage.errors import (
    DriverError,
    KeyBusy,
    KeyNotFound,
    OffsetMismatch,
    StorageFull,
    StorageNotWritable,
)

T = TypeVar("T")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
_PARTS_PER_SIZE = 1000  # parts of one size before the part size doubles
MAX_COPY_SIZE = 5 * 1024 * MiB  # CopyObject limit; larger objects are copied in parts
COPY_PART_SIZE = 1024 * MiB
READ_CHUNK = 1 * MiB
TAIL = "#tail-"  # `#` never occurs in the registry's keys
_APPENDABLE = "appendable"


@dataclass(slots=True)
class _AppendState:
    upload_id: str
    parts: list[tuple[int, str, int]] = field(default_factory=list)  # number, etag, size
    tail: int = 0
    tail_key: str | None = None  # this version's tail object: `<key>#tail-<random>`
    etag: str | None = None  # of the state record itself

    @property
    def size(self) -> int:
        return sum(p[2] for p in self.parts) + self.tail

    def dump(self) -> bytes:
        return json.dumps({"uploadId": self.upload_id, "parts": self.parts, "tail": self.tail,
                           "tailKey": self.tail_key}).encode()

    @classmethod
    def load(cls, data: bytes, etag: str) -> _AppendState:
        doc = json.loads(data)
        return cls(doc["uploadId"], [(int(n), str(e), int(z)) for n, e, z in doc["parts"]],
                   int(doc["tail"]), doc.get("tailKey"), etag)


class _Part:
    """One part being assembled: an anonymous memory map (freed on close, whatever the
    allocator's tuning), how much of it is filled, and how much of that is already hashed."""

    __slots__ = ("buffer", "fill", "observed")

    def __init__(self, size: int) -> None:
        self.buffer = mmap.mmap(-1, size)
        self.fill = 0
        self.observed = 0

    @property
    def full(self) -> bool:
        return self.fill == len(self.buffer)

    def write(self, view: memoryview, observed: bool) -> int:
        n = min(len(view), len(self.buffer) - self.fill)
        self.buffer[self.fill:self.fill + n] = view[:n]
        self.fill += n
        if observed:
            self.observed = self.fill
        return n

    def observe(self, observe: Observer) -> None:
        if self.observed < self.fill:
            with memoryview(self.buffer) as view:
                observe(view[self.observed:self.fill])
            self.observed = self.fill

    def data(self) -> bytes:
        return self.buffer[:self.fill]

    def close(self) -> None:
        self.buffer.close()


_CONFLICTS = ("UnknownError", "OperationAborted", "ConditionalRequestConflict")


def _precondition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")


class S3Driver:
    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        addressing_style: str = "auto",
        part_size: int = 8 * MiB,
        redirect: bool = True,
        redirect_expiry: int = 1200,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        storage_class: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 6,
        max_threads: int = 32,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 part size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.redirect = redirect
        self.redirect_expiry = redirect_expiry
        self._write_args: dict[str, str] = {}
        if server_side_encryption:
            self._write_args["ServerSideEncryption"] = server_side_encryption
        if kms_key_id:
            self._write_args["SSEKMSKeyId"] = kms_key_id
        if storage_class:
            self._write_args["StorageClass"] = storage_class
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token, region_name=region,
        )
        config = Config(
            max_pool_connections=max_threads,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            signature_version="s3v4",
            s3={"addressing_style": addressing_style, "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._session = session
        self._bucket = Bucket(bucket, self.prefix, self._access_key_id)
        self._bare_etags = False  # see _put_replacing
        self._threads = Threads(max_threads, "s3")
        # Set when a write was refused for a quota or by policy (what went wrong); /readyz is
        # not ready until `probe_write` succeeds.
        self.write_failure: str | None = None

    def _access_key_id(self) -> str | None:
        credentials = self._session.get_credentials()  # resolved when the client was made
        return credentials.access_key if credentials is not None else None

    # The one thread boundary of this driver. botocore failures are translated in the thread:
    # naming the access key may refresh expiring credentials, a blocking call.
    def _submit(self, fn: Callable[..., T], *args: Any, key: str = "") -> asyncio.Future[T]:
        return self._threads.run(self._translated, fn, args, key)

    def _translated(self, fn: Callable[..., T], args: tuple[Any, ...], key: str) -> T:
        try:
            return fn(*args)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, key, self._bucket) from None

    async def _run(self, fn: Callable[..., T], *args: Any, key: str = "") -> T:
        return await self._settle(self._submit(fn, *args, key=key))

    async def _settle(self, future: asyncio.Future[T]) -> T:
        try:
            return await future
        except (StorageFull, StorageNotWritable) as exc:
            self.write_failure = exc.message
            raise

    async def probe_write(self, key: str) -> str | None:
        """`base.probe_write`, forgetting the failure recorded before when it works."""
        problem = await probe_write(self, key)
        if problem is None:
            self.write_failure = None
        return problem

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "#" in key:
            raise DriverError(f"invalid key {key!r}")
        return self.prefix + key

    # -- small objects -------------------------------------------------------------------------

    async def get(self, key: str, max_size: int | None = None) -> bytes:
        return await self._run(self._get, self._key(key), max_size, key=key)

    def _get(self, full: str, max_size: int | None) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=full)
        body = response["Body"]
        try:
            if max_size is not None and response["ContentLength"] > max_size:
                raise DriverError(f"{full} is larger than {max_size} bytes")
            data: bytes = body.read()
            return data
        finally:
            body.close()

    async def put(self, key: str, data: bytes) -> None:
        await self._run(self._put, self._key(key), data, key=key)

    def _put(self, full: str, data: bytes, **extra: Any) -> str:
        response = self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                          **self._write_args, **extra)
        return str(response["ETag"])

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        full = self._key(key)
        try:
            await self._run(functools.partial(self._put, full, data, IfNoneMatch="*"), key=key)
        except KeyBusy:
            return False
        return True

    async def put_ordered(self, items: builtins.list[tuple[str, bytes, bool]]
                          ) -> builtins.list[bool]:
        """One PUT after the other: S3 has an object durably when it acknowledges it."""
        done = []
        for key, data, if_absent in items:
            if if_absent:
                done.append(await self.put_if_absent(key, data))
            else:
                await self.put(key, data)
                done.append(True)
        return done

    async def stat(self, key: str) -> Stat:
        return await self._run(self._stat, self._key(key), key=key)

    def _stat(self, full: str) -> Stat:
        head = self.client.head_object(Bucket=self.bucket, Key=full)
        meta = head.get("Metadata", {})
        size = int(meta["size"]) if _APPENDABLE in meta else int(head["ContentLength"])
        return Stat(size=size, modified=head["LastModified"].timestamp())

    async def stat_many(self, keys: builtins.list[str]) -> builtins.list[Stat]:
        return list(await asyncio.gather(*(self.stat(key) for key in keys)))

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except KeyNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        full = self._key(key)
        await self._run(self._delete_keys, [full], key=key)

    def _delete_keys(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            for error in response.get("Errors", []):
                # RGW answers UnknownError for a key that another request deletes or writes
                # at the same moment (AWS: success). Gone is what a delete is for; there
                # again, the other request wrote it (a replica taking a lapsed lease).
                key, code = str(error.get("Key")), str(error.get("Code"))
                if not self._exists(key):
                    continue
                if code in _CONFLICTS:
                    raise KeyBusy(key)
                if code == "AccessDenied":
                    raise not_writable("DeleteObjects", self._bucket)
                raise DriverError(f"could not delete {key}: {code}")

    def _exists(self, full: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NotFound", "404"):
                return False
            raise
        return True

    async def delete_many(self, keys: builtins.list[str]) -> None:
        if keys:
            await self._run(self._delete_keys, [self._key(k) for k in keys], key=keys[0])

    async def delete_prefix(self, prefix: str) -> None:
        await self._run(self._delete_prefix, self._key(prefix), key=prefix)

    def _delete_prefix(self, full_prefix: str) -> None:
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for upload in page.get("Uploads", []):
                self._abort(upload["Key"], upload["UploadId"])
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full_prefix)
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        if keys:
            self._delete_keys(keys)

    def _upload_exists(self, full: str, upload_id: str) -> bool:
        try:
            self.client.list_parts(Bucket=self.bucket, Key=full, UploadId=upload_id, MaxParts=1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                return False
            raise
        return True

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    # -- listing -------------------------------------------------------------------------------

    async def list(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        if not prefix.endswith("/"):
            raise DriverError("list prefix must end with '/'")
        return await self._run(self._list, prefix, start_after, limit, key=prefix)

    def _list(self, prefix: str, start_after: str | None, limit: int | None) -> builtins.list[str]:
        out: builtins.list[str] = []
        if limit is not None and limit <= 0:
            return out
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            args["StartAfter"] = self.prefix + start_after
        while True:
            wanted = 1000 if limit is None else min(1000, limit - len(out))
            response = self.client.list_objects_v2(MaxKeys=wanted, **args)
            for obj in response.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if "#" not in key:
                    out.append(key)
            if (limit is not None and len(out) >= limit) or not response.get("IsTruncated"):
                return out[:limit] if limit is not None else out
            args.pop("ContinuationToken", None)
            args["ContinuationToken"] = response["NextContinuationToken"]

    # -- streams -------------------------------------------------------------------------------

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            await self.stat(key)
            return
        byte_range = f"bytes={start}-{'' if end is None else end - 1}"
        if start == 0 and end is None:
            byte_range = ""
        body = await self._run(self._open_body, self._key(key), byte_range, key=key)
        try:
            while True:
                chunk = await self._run(body.read, READ_CHUNK, key=key)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    def _open_body(self, full: str, byte_range: str) -> Any:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if byte_range:
            args["Range"] = byte_range
        try:
            response = self.client.get_object(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange" and byte_range:
                # A range that starts at the end: no bytes, if the object exists at all.
                self.client.head_object(Bucket=self.bucket, Key=full)
                return io.BytesIO(b"")
            raise
        if _APPENDABLE in response.get("Metadata", {}):
            response["Body"].close()
            raise DriverError(f"{full} is still being appended to; seal it first")
        return response["Body"]

    async def scan(self, key: str, observe: Observer) -> int:
        return await self._run(self._scan, self._key(key), observe, key=key)

    def _scan(self, full: str, observe: Observer) -> int:
        body = self._open_body(full, "")
        total = 0
        try:
            while chunk := body.read(READ_CHUNK):
                observe(chunk)
                total += len(chunk)
        finally:
            body.close()
        return total

    # -- appends -------------------------------------------------------------------------------

    def _load_state(self, full: str) -> _AppendState | None:
        """The append state at `full`; None when absent; KeyNotFound when sealed (plain)."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = response["Body"]
        try:
            if _APPENDABLE not in response.get("Metadata", {}):
                raise KeyNotFound(full)
            return _AppendState.load(body.read(), response["ETag"])
        finally:
            body.close()

    def _start_append(self, full: str) -> _AppendState:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full,
                                                     **self._write_args)
        state = _AppendState(upload["UploadId"])
        try:
            self._save_state(full, state, create=True)
        except BaseException:
            self._abort(full, state.upload_id)
            raise
        return state

    def _put_replacing(self, full: str, data: bytes, etag: str, **extra: Any) -> str:
        """PutObject only while `full` has `etag` (ClientError 412 otherwise); its new ETag.

        `If-Match` goes quoted, as S3 returns ETags and RFC 9110 and AWS have it. Ceph RGW
        compares the header byte for byte with its unquoted ETag and refuses the quoted form:
        a refusal while the object still has that very ETag is such a store, and from then on
        this driver sends ETags bare. Decided by the form this request sent, so that requests
        already in flight when another one finds out are retried too."""
        bare = self._bare_etags
        try:
            return self._put(full, data, IfMatch=etag.strip('"') if bare else etag, **extra)
        except ClientError as exc:
            if bare or not _precondition_failed(exc):
                raise
            try:
                current = self.client.head_object(Bucket=self.bucket, Key=full)["ETag"]
            except ClientError:
                raise exc from None
            if current != etag:
                raise
            self._bare_etags = True
            return self._put(full, data, IfMatch=etag.strip('"'), **extra)

    def _save_state(self, full: str, state: _AppendState, create: bool = False) -> None:
        """Write the state record: new (`create`), or replacing the version `state` was read
        at. A writer that lost the race to another gets OffsetMismatch with the size the
        other recorded (where its client must resume); KeyNotFound if the record is gone."""
        body = state.dump()
        metadata = {_APPENDABLE: "1", "size": str(state.size)}
        try:
            if create:
                etag = self._put(full, body, Metadata=metadata, IfNoneMatch="*")
            else:
                etag = self._put_replacing(full, body, str(state.etag), Metadata=metadata)
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
            # Lost the race, or botocore retried a write whose answer was lost and S3 had
            # applied it: the stored record tells which.
            stored = self._load_state(full)  # KeyNotFound: sealed meanwhile
            if stored is None:  # RGW answers 412 where AWS answers 404 for a missing key
                raise KeyNotFound(full) from None
            if stored.dump() == body:
                state.etag = stored.etag
                return
            if create or stored.etag == state.etag:  # refused, yet nobody else wrote
                raise KeyBusy(full) from None
            raise OffsetMismatch(full, stored.size) from None
        state.etag = etag

    def _get_tail(self, state: _AppendState) -> bytes:
        # Every state version names its own tail object, so a racing appender's tail can
        # never be taken for ours.
        if state.tail_key is None:
            raise KeyBusy("tail")
        tail = self._get(state.tail_key, None)
        if len(tail) != state.tail:
            raise KeyBusy(state.tail_key)
        return tail

    def _part_size(self, number: int) -> int:
        """Size of part `number`: the configured size for the first 1000 parts, doubling every
        1000 after, so a small part size (little memory per upload) still reaches S3's 5 TiB
        object limit within its 10,000 parts."""
        return self.part_size << ((number - 1) // _PARTS_PER_SIZE)

    def _upload_part(self, full: str, state: _AppendState, number: int, data: bytes | _Part,
                     observe: Observer | None) -> tuple[int, str, int]:
        if number > MAX_PARTS:
            raise DriverError(f"{full}: more than {MAX_PARTS} parts; raise the part size")
        if isinstance(data, _Part):
            if observe is not None:
                data.observe(observe)
            data.buffer.seek(0)
            body: Any = data.buffer  # file-like: botocore reads (and re-reads on retry) it
            size = data.fill
        else:
            body, size = data, len(data)
        response = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=state.upload_id,
                                           PartNumber=number, Body=body, ContentLength=size)
        return (number, str(response["ETag"]), size)

    def _finish_append(self, full: str, state: _AppendState, lost: _Part | None, rest: _Part,
                       observe: Observer | None) -> None:
        if observe is not None:
            rest.observe(observe)  # `lost` was observed before its upload failed
        tail = (lost.data() if lost is not None else b"") + rest.data()
        old_tail = state.tail_key
        new_tail = f"{full}{TAIL}{secrets.token_hex(8)}" if tail else None
        if new_tail is not None:
            self._put(new_tail, tail)
        state.tail, state.tail_key = len(tail), new_tail
        try:
            self._save_state(full, state)
        except BaseException:
            if new_tail is not None:
                self._delete_keys([new_tail])  # we lost the race: leave the winner's state be
            raise
        if old_tail is not None and old_tail != new_tail:
            self._delete_keys([old_tail])

    async def append(
        self, key: str, offset: int, chunks: AsyncIterable[bytes], observe: Observer | None = None
    ) -> int:
        """Parts fill anonymous memory maps of the part size: one being filled and one being
        uploaded per request, at most, returned to the system as soon as they are done with
        (the request's chunks are copied once, hashed where they lie)."""
        full = self._key(key)
        try:
            state = await self._run(self._load_state, full, key=key)
        except KeyNotFound:
            raise KeyNotFound(key) from None
        if state is None:
            if offset != 0:
                raise KeyNotFound(key)
            state = await self._run(self._start_append, full, key=key)
        if state.size != offset:
            raise OffsetMismatch(key, state.size)
        pending: tuple[asyncio.Future[tuple[int, str, int]], _Part] | None = None
        part = _Part(self._part_size(len(state.parts) + 1))

        async def feed(data: bytes | memoryview, observed: bool) -> None:
            nonlocal pending, part
            view = memoryview(data)
            while view:
                view = view[part.write(view, observed):]
                if not part.full:
                    continue
                if pending is not None:
                    state.parts.append(await self._settle(pending[0]))
                    pending[1].close()
                    pending = None
                number = len(state.parts) + 1
                future = self._submit(self._upload_part, full, state, number, part, observe,
                                      key=key)
                pending = (future, part)
                part = _Part(self._part_size(number + 1))

        lost: _Part | None = None  # a part whose upload failed: kept as the start of the tail
        try:
            if state.tail:  # hashed when it arrived
                await feed(await self._run(self._get_tail, state, key=key), True)
            async for chunk in chunks:
                if chunk:
                    await feed(chunk, False)
        finally:
            try:
                if pending is not None:
                    try:
                        state.parts.append(await self._settle(pending[0]))
                        pending[1].close()
                    except BaseException:
                        lost = pending[1]  # maybe still read by its thread: not closed here
                        raise
            finally:
                # Record what arrived (also after a disconnect) so the client can resume.
                await self._run(self._finish_append, full, state, lost, part, observe, key=key)
                part.close()
        return state.size

    async def seal(self, key: str, size: int) -> None:
        try:
            await self._run(self._seal, self._key(key), size, key=key)
        except KeyNotFound:
            raise KeyNotFound(key) from None
        except OffsetMismatch as exc:
            raise OffsetMismatch(key, exc.size) from None

    def _seal(self, full: str, size: int) -> None:
        try:
            state = self._load_state(full)
        except KeyNotFound:
            actual = int(self.client.head_object(Bucket=self.bucket, Key=full)["ContentLength"])
            if actual != size:
                raise OffsetMismatch(full, actual) from None
            return  # sealed already
        if state is None:
            raise KeyNotFound(full)
        if state.size != size:
            raise OffsetMismatch(full, state.size)
        parts = list(state.parts)
        if state.tail:
            tail = self._get_tail(state)
            parts.append(self._upload_part(full, state, len(parts) + 1, tail, None))
        if not parts:
            self._abort(full, state.upload_id)
            self._put_replacing(full, b"", str(state.etag))
        else:
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=state.upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                               for n, e, _ in parts]},
                )
            except ClientError:
                # RGW answers 500 InternalError where AWS answers 404 NoSuchUpload when the
                # upload was aborted (cancelled) meanwhile.
                if not self._upload_exists(full, state.upload_id):
                    raise KeyNotFound(full) from None
                raise
        if state.tail_key is not None:
            self._delete_keys([state.tail_key])

    # -- moves and URLs ------------------------------------------------------------------------

    async def move(self, src: str, dst: str) -> None:
        await self._run(self._move, self._key(src), self._key(dst), key=src)

    def _move(self, src: str, dst: str) -> None:
        head = self.client.head_object(Bucket=self.bucket, Key=src)
        if _APPENDABLE in head.get("Metadata", {}):
            raise KeyBusy(src)  # still being appended to: seal first
        size = int(head["ContentLength"])
        source = {"Bucket": self.bucket, "Key": src}
        if size <= MAX_COPY_SIZE:
            self.client.copy_object(Bucket=self.bucket, Key=dst, CopySource=source,
                                    **self._write_args)
        else:
            self._copy_in_parts(source, dst, size)
        self._delete_keys([src])

    def _copy_in_parts(self, source: dict[str, str], dst: str, size: int) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=dst,
                                                     **self._write_args)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                response = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=dst, UploadId=upload_id, PartNumber=number,
                    CopySource=source, CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=dst, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(dst, upload_id)
            raise

    async def redirect_url(self, key: str, expires_in: int) -> str | None:
        if not self.redirect:
            return None
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=min(expires_in, self.redirect_expiry),
        )
        return url

    async def close(self) -> None:
        self._threads.close()
