"""Layer operations: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer.

A layer upload is an ordinary upload session of the data plane (same store, same records), so
its parts can be written by any replica and the finished blob is served by `/v2/` at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from registry import signed_urls
from registry.ecr import errors
from registry.ecr.params import check_registry, digest, existing_repository, repository_name
from storage.content.digest import Digest
from storage.errors import BlobUnknown, DigestInvalid, UploadBusy, UploadOffsetMismatch
from storage.uploads import UploadSession

if TYPE_CHECKING:
    from registry.ecr import Context

# ECR's own part size. A part travels base64'd in a JSON body, so UploadLayerPart needs a
# request body limit of at least 4/3 of this plus the JSON envelope (14 MiB).
PART_SIZE = 10 * 1024 * 1024
MAX_PART = 20 * 1024 * 1024  # botocore's LayerPartBlob maximum
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MAX_DIGESTS = 100



def _upload_id(params: dict[str, Any]) -> str:
    value = params.get("uploadId")
    if not isinstance(value, str) or not value:
        raise errors.invalid("uploadId must be a non-empty string")
    return value


def _position(params: dict[str, Any], key: str) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.invalid(f"{key} must be a non-negative integer")
    return value


def _invalid_part(message: str, session: UploadSession, size: int) -> errors.EcrError:
    return errors.EcrError(
        "InvalidLayerPartException",
        f"{message} (uploadId {session.id}, lastValidByteReceived {size - 1})",
        fields={"repositoryName": session.repository, "uploadId": session.id,
                "lastValidByteReceived": size - 1})


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # makes this an async generator


async def batch_check_layer_availability(context: Context,
                                         params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    digests = params.get("layerDigests")
    if (not isinstance(digests, list) or not 1 <= len(digests) <= MAX_DIGESTS
            or not all(isinstance(d, str) and len(d) <= 1000 for d in digests)):
        raise errors.invalid(f"layerDigests must list 1 to {MAX_DIGESTS} strings of at most "
                             "1000 characters")
    # The driver's thread pool bounds how many of these run at once.
    answers = await asyncio.gather(*(_check(context, name, d) for d in digests))
    return {"layers": [a for ok, a in answers if ok],
            "failures": [a for ok, a in answers if not ok]}


async def _check(context: Context, name: str, text: str) -> tuple[bool, dict[str, Any]]:
    if not text:
        return False, {"layerDigest": text, "failureCode": "MissingLayerDigest",
                       "failureReason": "layer digest is empty"}
    try:
        parsed = Digest.parse(text)
    except DigestInvalid as exc:
        return False, {"layerDigest": text, "failureCode": "InvalidLayerDigest",
                       "failureReason": exc.message}
    try:
        info = await context.store.blobs.stat(name, parsed)
    except BlobUnknown:
        return True, {"layerDigest": text, "layerAvailability": "UNAVAILABLE",
                      "mediaType": LAYER_MEDIA_TYPE}
    return True, {"layerDigest": text, "layerAvailability": "AVAILABLE",
                  "layerSize": info.size, "mediaType": LAYER_MEDIA_TYPE}


async def initiate_layer_upload(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    name = repository_name(params)
    await context.for_push(name)  # creates it only when a template and IAM both allow
    session = await context.store.uploads.start(name)
    return {"uploadId": session.id, "partSize": PART_SIZE}


async def upload_layer_part(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    upload_id = _upload_id(params)
    first = _position(params, "partFirstByte")
    last = _position(params, "partLastByte")
    blob = params.get("layerPartBlob")
    if not isinstance(blob, str):
        raise errors.invalid("layerPartBlob must be base64-encoded bytes")
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid("layerPartBlob is not valid base64") from None
    del params["layerPartBlob"], blob  # drop the base64 text once decoded: a bounded peak
    if len(data) > MAX_PART:
        raise errors.invalid(f"layerPartBlob may hold at most {MAX_PART} bytes")
    uploads = context.store.uploads
    session = await uploads.get(name, upload_id)
    if not data or last - first + 1 != len(data):
        raise _invalid_part(f"the part covers bytes {first}-{last} but carries {len(data)} bytes",
                            session, session.size)
    if first != session.size:
        raise _invalid_part(f"the part starts at byte {first} but the upload has "
                            f"{session.size} bytes", session, session.size)
    try:
        size = await uploads.append(session, _once(data), first)
    except UploadOffsetMismatch as exc:
        raise _invalid_part(f"the part starts at byte {first} but the upload has {exc.size} "
                            "bytes", session, exc.size) from None
    except UploadBusy:
        raise errors.EcrError("InvalidLayerPartException",
                              "another request is writing to this upload; retry the part "
                              "after it finishes") from None
    return {"registryId": context.account, "repositoryName": name, "uploadId": session.id,
            "lastByteReceived": size - 1}


async def complete_layer_upload(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    upload_id = _upload_id(params)
    digests = params.get("layerDigests")
    if not isinstance(digests, list) or len(digests) != 1:
        raise errors.invalid("layerDigests must list exactly one digest")
    expected = digest(digests[0], "layerDigests")
    uploads = context.store.uploads
    session = await uploads.get(name, upload_id)
    if session.committed != str(expected) and await context.store.blobs.linked(name, expected):
        await uploads.cancel(session)
        raise errors.EcrError("LayerAlreadyExistsException",
                              f"The layer '{expected}' already exists in the repository with "
                              f"name '{name}' in the registry with id '{context.account}'")
    if session.committed is None and session.size == 0:
        raise errors.EcrError("EmptyUploadException",
                              f"The upload with id '{session.id}' contains no data")
    try:
        # The empty final append checks, under the driver's writer lock, that the stored
        # bytes still end where the session said: a part racing in is refused, not lost.
        await uploads.complete(session, expected, _nothing())
    except DigestInvalid:
        raise errors.EcrError("InvalidLayerException",
                              f"The layer digest '{expected}' does not match the uploaded "
                              "content") from None
    except (UploadBusy, UploadOffsetMismatch):
        raise errors.EcrError("InvalidLayerPartException",
                              "another request is writing to this upload; complete it after "
                              "the part finishes") from None
    return {"registryId": context.account, "repositoryName": name, "uploadId": session.id,
            "layerDigest": str(expected)}


async def get_download_url_for_layer(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    layer = digest(params.get("layerDigest"), "layerDigest")
    blobs = context.store.blobs
    if not await blobs.linked(name, layer):
        raise errors.EcrError("LayersNotFoundException",
                              f"The layer '{layer}' does not exist in the repository with name "
                              f"'{name}' in the registry with id '{context.account}'")
    url = await blobs.redirect_url(layer, signed_urls.DEFAULT_TTL)
    if url is None:
        url = _registry_url(context, name, layer)
    return {"downloadUrl": url, "layerDigest": str(layer)}


def _registry_url(context: Context, name: str, layer: Digest) -> str:
    """This registry's own blob URL, signed when auth is on (no credentials needed for it)."""
    path = str(context.request.app.url_path_for("blob", name=name, digest=str(layer)))
    public = context.settings.server.public_url or str(context.request.base_url)
    url = public.rstrip("/") + path
    signer = signed_urls.signer(context.settings.auth)
    if signer is None:
        return url
    return f"{url}?{signer.query('GET', path)}"
