"""What only the S3 driver has: multipart uploads behind appends, tails, presigned URLs.

The shared suite (`test_driver.py`) checks the contract through the driver; these tests also
look into the bucket with plain boto3, to see that nothing is left behind where the driver's
own listing cannot show it (multipart uploads, `#tail` objects).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
import pytest

from storage.drivers.s3 import S3Driver
from storage.errors import KeyNotFound
from tests.conftest import S3_BACKENDS

from .conftest import S3_PART_SIZE, s3_options

MiB = 1024 * 1024


@pytest.fixture(params=sorted(S3_BACKENDS))
def s3_backend(request: pytest.FixtureRequest) -> str:
    """Each S3 endpoint: moto, and Ceph RGW."""
    return str(request.param)


@pytest.fixture
def s3(request: pytest.FixtureRequest, runner: asyncio.Runner,
       s3_backend: str) -> Iterator[S3Driver]:
    driver = S3Driver(**s3_options(request, s3_backend))
    try:
        yield driver
    finally:
        runner.run(driver.close())


async def stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 13 + seed) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def pieces(data: bytes, size: int = MiB) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def raw_keys(s3: S3Driver) -> list[str]:
    """Every object under the driver's prefix, as the bucket lists it (tails included)."""
    response = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=s3.prefix)
    return [obj["Key"][len(s3.prefix):] for obj in response.get("Contents", [])]


def multipart_uploads(s3: S3Driver, prefix: str = "") -> list[dict[str, Any]]:
    response = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=s3.prefix + prefix)
    uploads: list[dict[str, Any]] = response.get("Uploads", [])
    return uploads


@pytest.mark.parametrize("size", [1000, S3_PART_SIZE + 5, 2 * S3_PART_SIZE],
                         ids=["tail-only", "part-and-tail", "two-parts-no-tail"])
async def test_delete_prefix_aborts_the_multipart_upload(s3: S3Driver, size: int) -> None:
    await s3.put("uploads/u1/info", b"{}")
    assert await s3.append("uploads/u1/data", 0, stream(pieces(pattern(size)))) == size
    await s3.put("uploads/u2/info", b"{}")
    assert await s3.append("uploads/u2/data", 0, stream([b"other upload"])) == 12
    in_progress = multipart_uploads(s3, "uploads/u1/")
    assert [u["Key"] for u in in_progress] == [s3.prefix + "uploads/u1/data"]
    if size % S3_PART_SIZE:
        assert any(k.startswith("uploads/u1/data#tail-") for k in raw_keys(s3))

    await s3.delete_prefix("uploads/u1/")

    assert multipart_uploads(s3, "uploads/u1/") == []
    assert len(multipart_uploads(s3, "uploads/u2/")) == 1  # the neighbour is untouched
    assert [k for k in raw_keys(s3) if k.startswith("uploads/u1")] == []
    assert await s3.list("uploads/") == ["uploads/u2/data", "uploads/u2/info"]
    with pytest.raises(KeyNotFound):
        await s3.stat("uploads/u1/data")
    await s3.seal("uploads/u2/data", 12)
    assert await s3.get("uploads/u2/data") == b"other upload"
    assert multipart_uploads(s3) == []


async def test_sealed_object_is_one_multipart_object_and_leaves_nothing_behind(
        s3: S3Driver) -> None:
    """3 + 4 + 6 MiB in three requests over 5 MiB parts: two full parts while appending, the
    3 MiB rest uploaded as the last part by `seal`."""
    data = pattern(13 * MiB, seed=4)
    offset = 0
    for size in (3 * MiB, 4 * MiB, 6 * MiB):
        offset = await s3.append("up/data", offset, stream(pieces(data[offset:offset + size])))
    assert offset == len(data)
    keys = sorted(raw_keys(s3))
    assert len(keys) == 2 and keys[0] == "up/data" and keys[1].startswith("up/data#tail-")
    assert (await s3.stat("up/data")).size == len(data)

    await s3.seal("up/data", len(data))

    assert raw_keys(s3) == ["up/data"]
    assert multipart_uploads(s3) == []
    head = s3.client.head_object(Bucket=s3.bucket, Key=s3.prefix + "up/data")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three parts
    assert "appendable" not in head.get("Metadata", {})
    body = s3.client.get_object(Bucket=s3.bucket, Key=s3.prefix + "up/data")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


async def test_seal_of_empty_append_leaves_no_multipart_upload(s3: S3Driver) -> None:
    assert await s3.append("up/empty", 0, stream([])) == 0
    assert len(multipart_uploads(s3)) == 1
    await s3.seal("up/empty", 0)
    assert multipart_uploads(s3) == []
    assert raw_keys(s3) == ["up/empty"]
    assert await s3.get("up/empty") == b""


async def test_redirect_url_serves_the_exact_bytes(s3: S3Driver) -> None:
    data = pattern(2 * MiB + 3, seed=9)
    assert await s3.append("blobs/ab/abcd", 0, stream(pieces(data))) == len(data)
    await s3.seal("blobs/ab/abcd", len(data))
    url = await s3.redirect_url("blobs/ab/abcd", 60)
    assert url is not None and "X-Amz-Signature=" in url
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == data
        # The signature covers the key: another key with the same query is refused.
        forged = url.replace("blobs/ab/abcd", "blobs/ab/abce")
        assert (await client.get(forged)).status_code in (403, 404)


async def test_redirect_disabled(request: pytest.FixtureRequest, s3_backend: str) -> None:
    driver = S3Driver(**{**s3_options(request, s3_backend), "redirect": False})
    try:
        await driver.put("blobs/object", b"v")
        assert await driver.redirect_url("blobs/object", 60) is None
    finally:
        await driver.close()
