"""Image operations: ListImages, DescribeImages, BatchGetImage, BatchDeleteImage, PutImage,
ListImageReferrers. They read and write the same manifests, tags and revision records as the
data plane (storage/manifests.py), so an image pushed either way is seen both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import (
    check_registry,
    decode_token,
    digest,
    encode_token,
    existing_repository,
    max_results,
    repository_name,
)
from storage.content.digest import Digest
from storage.content.names import check_tag
from storage.errors import DigestInvalid, ManifestUnknown, TagInvalid
from storage.manifests import ImageEntry

if TYPE_CHECKING:
    from registry.ecr import Context

DEFAULT_RESULTS = 100
MAX_RESULTS = 1000
MAX_IMAGE_IDS = 100
MAX_REFERRERS_RESULTS = 50
TAG_STATUS = ("TAGGED", "UNTAGGED", "ANY")



def _tag_status(params: dict[str, Any]) -> str:
    filters = params.get("filter") or {}
    if not isinstance(filters, dict):
        raise errors.invalid("filter must be an object")
    status = filters.get("tagStatus", "ANY")
    if status not in TAG_STATUS:
        raise errors.invalid(f"filter.tagStatus must be one of {', '.join(TAG_STATUS)}")
    image_status = filters.get("imageStatus", "ANY")
    if image_status not in ("ACTIVE", "ANY", "ARCHIVED", "ACTIVATING"):
        raise errors.invalid("filter.imageStatus must be ACTIVE, ARCHIVED, ACTIVATING or ANY")
    if image_status in ("ARCHIVED", "ACTIVATING"):
        return "NONE"  # every image here is ACTIVE: nothing matches
    return str(status)


def _image_ids(params: dict[str, Any]) -> list[dict[str, Any]]:
    ids = params.get("imageIds")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IMAGE_IDS:
        raise errors.invalid(f"imageIds must list 1 to {MAX_IMAGE_IDS} image identifiers")
    if not all(isinstance(i, dict) for i in ids):
        raise errors.invalid("each image identifier must be an object")
    return ids


class _Failure(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _failure(image_id: dict[str, Any], failure: _Failure) -> dict[str, Any]:
    return {"imageId": _clean_id(image_id), "failureCode": failure.code,
            "failureReason": failure.reason}


def _clean_id(image_id: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image_id.items()
            if k in ("imageDigest", "imageTag") and isinstance(v, str)}


async def _resolve(context: Context, name: str, image_id: dict[str, Any]) -> Digest:
    """The digest an image identifier names, or a _Failure with ECR's failure code."""
    raw_digest, raw_tag = image_id.get("imageDigest"), image_id.get("imageTag")
    if raw_digest is None and raw_tag is None:
        raise _Failure("MissingDigestAndTag", "Invalid request parameters: both tag and digest "
                       "cannot be null")
    wanted: Digest | None = None
    if raw_digest is not None:
        try:
            wanted = Digest.parse(str(raw_digest))
        except DigestInvalid:
            raise _Failure("InvalidImageDigest", "Invalid image digest") from None
    manifests = context.store.manifests
    if raw_tag is not None:
        try:
            tag = check_tag(str(raw_tag))
        except TagInvalid:
            raise _Failure("InvalidImageTag", "Invalid image tag") from None
        found = await manifests.tag_digest(name, tag)
        if found is None:
            raise _Failure("ImageNotFound", "Requested image not found")
        if wanted is not None and found != wanted:
            raise _Failure("ImageTagDoesNotMatchDigest", "Invalid request parameters: image "
                           "tag and digest do not match")
        return found
    assert wanted is not None
    if await manifests.revision_record(name, wanted) is None:
        raise _Failure("ImageNotFound", "Requested image not found")
    return wanted


# -- listings ------------------------------------------------------------------------------------


async def list_images(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    limit = max_results(params, DEFAULT_RESULTS, MAX_RESULTS)
    status = _tag_status(params)
    after = decode_token(params)
    ids: list[dict[str, str]] = []
    position = after
    async for entry in _entries(context, name, after, limit):
        for item, key in _listed(entry, status):
            if len(ids) == limit:
                return {"imageIds": ids, "nextToken": encode_token(position or "")}
            ids.append(item)
            position = key
        position = entry.last_key
    return {"imageIds": ids}


def _listed(entry: ImageEntry, status: str) -> list[tuple[dict[str, str], str]]:
    """ListImages' identifiers for one manifest (one per tag), each with its resume position."""
    digest_text = str(entry.digest)
    if entry.tags and status in ("TAGGED", "ANY"):
        return [({"imageDigest": digest_text, "imageTag": tag}, key)
                for tag, key in zip(entry.tags, entry.tag_keys, strict=True)]
    if not entry.tags and entry.revision and status in ("UNTAGGED", "ANY"):
        return [({"imageDigest": digest_text}, entry.last_key)]
    return []


def _entries(context: Context, name: str, after: str | None,
             limit: int) -> AsyncIterator[ImageEntry]:
    return context.store.manifests.images(name, after, batch=limit + 1)


async def describe_images(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    if params.get("imageIds") is not None:
        if "maxResults" in params or "nextToken" in params:
            raise errors.invalid("imageIds cannot be used with maxResults or nextToken")
        return {"imageDetails": await _describe_ids(context, name, _image_ids(params))}
    limit = max_results(params, DEFAULT_RESULTS, MAX_RESULTS)
    status = _tag_status(params)
    after = decode_token(params)
    chosen: list[ImageEntry] = []
    token: str | None = None
    async for entry in _entries(context, name, after, limit):
        if not _listed(entry, status):
            continue
        if len(chosen) == limit:
            token = chosen[-1].last_key
            break
        chosen.append(entry)
    details = await asyncio.gather(*(_detail(context, name, e.digest, e.tags) for e in chosen))
    result: dict[str, Any] = {"imageDetails": [d for d in details if d is not None]}
    if token is not None:
        result["nextToken"] = encode_token(token)
    return result


async def _describe_ids(context: Context, name: str,
                        image_ids: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[Digest] = []
    for image_id in image_ids:
        try:
            found = await _resolve(context, name, image_id)
        except _Failure as failure:
            if failure.code == "ImageNotFound":
                raise errors.EcrError(
                    "ImageNotFoundException",
                    f"The image with imageId {_clean_id(image_id)} does not exist within the "
                    f"repository with name '{name}' in the registry with id "
                    f"'{context.account}'") from None
            raise errors.invalid(failure.reason) from None
        if found not in seen:
            seen.append(found)
    details = []
    for found in seen:
        tags = await context.store.manifests.tags_of(name, found)
        detail = await _detail(context, name, found, tags)
        if detail is not None:
            details.append(detail)
    return details


async def _detail(context: Context, name: str, found: Digest,
                  tags: list[str]) -> dict[str, Any] | None:
    manifests = context.store.manifests
    record = await manifests.revision_record(name, found)
    if record is None:
        return None  # deleted while we listed
    size = record.get("imageSize")
    if not isinstance(size, int):
        size = await _image_size(context, name, found)
    detail: dict[str, Any] = {
        "registryId": context.account,
        "repositoryName": name,
        "imageDigest": str(found),
        "imageSizeInBytes": size,
        "imagePushedAt": float(record.get("pushedAt", 0)),
        "imageManifestMediaType": str(record.get("mediaType", "")),
        "imageStatus": "ACTIVE",
    }
    if tags:
        detail["imageTags"] = tags
    if record.get("artifactMediaType"):
        detail["artifactMediaType"] = str(record["artifactMediaType"])
    if record.get("subject"):
        detail["subjectManifestDigest"] = str(record["subject"])
    pulled = await manifests.last_pull(name, found)
    if pulled is not None:
        detail["lastRecordedPullTime"] = pulled
    return detail


async def _image_size(context: Context, name: str, found: Digest) -> int:
    """For revisions recorded before sizes were: the layers' sizes (largest child of an index)."""
    from storage.content.manifest import parse_manifest

    try:
        stored = await context.store.manifests.get(name, str(found))
    except ManifestUnknown:
        return 0
    manifest = parse_manifest(stored.raw, stored.media_type, found.algorithm)
    if not manifest.is_index:
        return sum(d.size for d in manifest.layers)
    sizes = [await _image_size(context, name, child.digest) for child in manifest.manifests]
    return max(sizes, default=0)


# -- read and write ------------------------------------------------------------------------------


async def batch_get_image(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    image_ids = _image_ids(params)
    accepted = params.get("acceptedMediaTypes")
    if accepted is not None and (not isinstance(accepted, list) or not 1 <= len(accepted) <= 100
                                 or not all(isinstance(a, str) for a in accepted)):
        raise errors.invalid("acceptedMediaTypes must list 1 to 100 media types")
    images: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for image_id in image_ids:
        try:
            found = await _resolve(context, name, image_id)
            stored = await context.store.manifests.get(name, str(found))
            if accepted is not None and stored.media_type not in accepted:
                raise _Failure("ImageNotFound", f"Requested image's media type "
                               f"{stored.media_type} is not in acceptedMediaTypes")
            text = stored.raw.decode("utf-8")
        except _Failure as failure:
            failures.append(_failure(image_id, failure))
            continue
        except ManifestUnknown:
            failures.append(_failure(image_id, _Failure("ImageNotFound",
                                                        "Requested image not found")))
            continue
        except UnicodeDecodeError:
            failures.append(_failure(image_id, _Failure(
                "ImageInaccessible", "the manifest is not UTF-8 text and cannot be returned "
                "in JSON; pull it over /v2/")))
            continue
        identifier = {"imageDigest": str(found)}
        if isinstance(image_id.get("imageTag"), str):
            identifier["imageTag"] = image_id["imageTag"]
        images.append({"registryId": context.account, "repositoryName": name,
                       "imageId": identifier, "imageManifest": text,
                       "imageManifestMediaType": stored.media_type})
        await context.store.manifests.note_pull(name, found)
    return {"images": images, "failures": failures}


async def put_image(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    name = repository_name(params)
    text = params.get("imageManifest")
    if not isinstance(text, str) or not 1 <= len(text) <= 4 * 1024 * 1024:
        raise errors.invalid("imageManifest must be a string of 1 to 4194304 characters")
    media_type = params.get("imageManifestMediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise errors.invalid("imageManifestMediaType must be a string")
    tag = params.get("imageTag")
    if tag is not None:
        if not isinstance(tag, str):
            raise errors.invalid("imageTag must be a string")
        try:
            check_tag(tag)
        except TagInvalid as exc:
            raise errors.invalid(f"Invalid parameter at 'imageTag': {exc}") from None
    raw = text.encode("utf-8")
    given = digest(params["imageDigest"]) if params.get("imageDigest") is not None else None
    actual = Digest.of(raw, given.algorithm if given else "sha256")
    if given is not None and given != actual:
        raise errors.EcrError(
            "ImageDigestDoesNotMatchException",
            f"Invalid parameter at 'imageDigest': the manifest's digest is {actual}, not "
            f"{given}")
    manifests = context.store.manifests
    extra_tags = (tag,) if tag is not None else ()
    checked = manifests.check(str(actual), raw, media_type, extra_tags)  # before storing
    settings = await context.for_push(name)
    exists = await manifests.revision_record(name, actual) is not None
    if exists and (tag is None or await manifests.tag_digest(name, tag) == actual):
        described = f"digest '{actual}'" + (f" and tag '{tag}'" if tag else "")
        raise errors.EcrError(
            "ImageAlreadyExistsException",
            f"Image with {described} already exists in the repository with name '{name}' in "
            f"registry with id '{context.account}'")
    manifest = await manifests.put(name, str(actual), raw, media_type, extra_tags, settings,
                                   checked=checked)
    identifier = {"imageDigest": str(actual)}
    if tag is not None:
        identifier["imageTag"] = tag
    return {"image": {"registryId": context.account, "repositoryName": name,
                      "imageId": identifier, "imageManifest": text,
                      "imageManifestMediaType": manifest.media_type}}


async def batch_delete_image(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    image_ids = _image_ids(params)
    if not context.settings.storage.delete_enabled:
        raise errors.invalid("deletes are disabled on this registry (storage.delete_enabled)")
    manifests = context.store.manifests
    deleted: list[dict[str, str]] = []
    failures: list[dict[str, Any]] = []
    for image_id in image_ids:
        try:
            found = await _resolve(context, name, image_id)
        except _Failure as failure:
            failures.append(_failure(image_id, failure))
            continue
        tag = image_id.get("imageTag")
        try:
            if isinstance(tag, str):
                # Removing a tag; the image goes with its last tag, as ECR does it.
                await manifests.untag(name, tag)
                if not await manifests.tags_of(name, found):
                    await manifests.delete(name, str(found))
                deleted.append({"imageDigest": str(found), "imageTag": tag})
                continue
            tags = await manifests.tags_of(name, found)
            await manifests.delete(name, str(found))
        except ManifestUnknown:
            failures.append(_failure(image_id, _Failure("ImageNotFound",
                                                        "Requested image not found")))
            continue
        deleted += ([{"imageDigest": str(found), "imageTag": t} for t in tags]
                    or [{"imageDigest": str(found)}])
    return {"imageIds": deleted, "failures": failures}


async def list_image_referrers(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    subject_id = params.get("subjectId")
    if not isinstance(subject_id, dict):
        raise errors.invalid("subjectId must name an imageDigest")
    subject = digest(subject_id.get("imageDigest"), "subjectId.imageDigest")
    limit = max_results(params, MAX_REFERRERS_RESULTS, MAX_REFERRERS_RESULTS)
    filters = params.get("filter") or {}
    if not isinstance(filters, dict):
        raise errors.invalid("filter must be an object")
    types = filters.get("artifactTypes")
    if types is not None and (not isinstance(types, list) or len(types) > 5
                              or not all(isinstance(t, str) for t in types)):
        raise errors.invalid("filter.artifactTypes must list at most 5 artifact types")
    status = filters.get("artifactStatus", "ACTIVE")
    if status not in ("ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"):
        raise errors.invalid("filter.artifactStatus must be ACTIVE, ARCHIVED, ACTIVATING or ANY")
    after = decode_token(params)
    descriptors = await context.store.manifests.referrers(name, subject)
    found = sorted((d for d in descriptors
                    if (not types or d.get("artifactType") in types)
                    and status in ("ACTIVE", "ANY")),
                   key=lambda d: str(d.get("digest")))
    if after is not None:
        found = [d for d in found if str(d.get("digest")) > after]
    page = found[:limit]
    referrers = []
    for d in page:
        item: dict[str, Any] = {"digest": d.get("digest"), "mediaType": d.get("mediaType"),
                                "size": d.get("size"), "artifactStatus": "ACTIVE"}
        if d.get("artifactType"):
            item["artifactType"] = d["artifactType"]
        if d.get("annotations"):
            item["annotations"] = d["annotations"]
        referrers.append(item)
    result: dict[str, Any] = {"referrers": referrers}
    if len(found) > limit:
        result["nextToken"] = encode_token(str(page[-1].get("digest")))
    return result
