"""The pull-through cache: pulls from a repository under a pull-through cache rule are served
from storage when cached, else fetched from the upstream and stored on the way through.

- Manifests: a tag is served from the cache while it was checked against the upstream less than
  `pull_through.tag_ttl` seconds ago; after that the upstream's digest is asked for (HEAD), and
  a moved tag is fetched again. When the upstream cannot be reached, what is cached is served.
  A manifest asked for by digest is fetched once and kept (content never changes).
- Blobs: streamed to the client while they are written to an upload session, which is then
  completed (digest verified) and linked, so the first pull costs what a pull from the upstream
  costs. Concurrent first pulls of one blob in a process fetch it once: the others wait, then
  read the stored copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from auth.secrets import SecretBox
from registry.settings import Settings
from registry.upstream import Credentials, FetchedManifest, Upstream, UpstreamError
from storage.content.digest import Digest
from storage.content.names import is_tag
from storage.errors import BlobUnknown, DigestInvalid, ManifestInvalid, ManifestUnknown
from storage.manifests import StoredManifest
from storage.pullthrough import upstream_repository
from storage.store import Store

log = logging.getLogger("registry")
_FLUSH = 4 * 1024 * 1024
_WAIT_FOR_OTHER_FETCH = 120.0  # then fetch it ourselves


def secret_name(credential_arn: str) -> str:
    """`arn:aws:secretsmanager:<region>:<account>:secret:ecr-pullthroughcache/<name>` → name."""
    return credential_arn.split(":secret:ecr-pullthroughcache/", 1)[-1]


class PullThroughCache:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.box = SecretBox(settings.auth.secret_key) if settings.auth.secret_key else None
        self._upstreams: dict[tuple[str, str], Upstream] = {}
        self._fetching: dict[Digest, asyncio.Event] = {}

    async def close(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.close()

    async def _upstream(self, rule: dict[str, Any]) -> Upstream:
        arn = str(rule.get("credentialArn") or "")
        key = (str(rule["upstreamRegistryUrl"]), arn)
        found = self._upstreams.get(key)
        if found is None:
            found = Upstream(key[0], await self._credentials(arn) if arn else None)
            self._upstreams[key] = found
        return found

    async def _credentials(self, arn: str) -> Credentials | None:
        sealed = await self.store.pull_through.secret(secret_name(arn))
        if sealed is None or self.box is None:
            log.warning("pull-through credentials %s are missing or cannot be opened", arn)
            return None
        values = json.loads(self.box.open(sealed, "upstream-secret"))
        return Credentials(str(values["username"]), str(values["accessToken"]))

    async def check(self, rule: dict[str, Any]) -> None:
        """UpstreamError unless the upstream's /v2/ base answers (with the rule's credentials)."""
        await (await self._upstream(rule)).ping()

    # -- manifests -------------------------------------------------------------------------------

    async def manifest(self, name: str, reference: str) -> StoredManifest:
        """The manifest to serve for `name:reference` (fetched through when need be)."""
        manifests = self.store.manifests
        match = await self.store.pull_through.match(name)
        if match is None:
            return await manifests.get(name, reference, pull=True)
        prefix, rule = match
        remote = upstream_repository(prefix, rule, name)
        try:
            stored: StoredManifest | None = await manifests.get(name, reference, pull=True)
        except ManifestUnknown:
            stored = None
        if stored is not None and not is_tag(reference):
            return stored  # content-addressed: never stale
        upstream = await self._upstream(rule)
        if stored is not None:
            checked = await self.store.pull_through.checked_at(name, reference)
            if checked is not None and time.time() - checked < self.settings.pull_through.tag_ttl:
                return stored
            try:
                current = await upstream.manifest_digest(remote, reference)
            except UpstreamError as exc:
                log.info("pull-through %s:%s: upstream check failed (%s); serving the cached "
                         "copy", name, reference, exc)
                return stored
            if current == str(stored.digest):
                await self.store.pull_through.mark_checked(name, reference)
                return stored
        try:
            fetched = await upstream.manifest(remote, reference)
        except UpstreamError as exc:
            if stored is not None:
                return stored
            raise ManifestUnknown(f"manifest {reference!r} not found upstream ({exc})",
                                  {"reference": reference}) from None
        await self._store_manifest(name, reference, fetched)
        return await manifests.get(name, reference, pull=True)

    async def _store_manifest(self, name: str, reference: str, fetched: FetchedManifest) -> None:
        settings = await self.store.repositories.for_pull_through(name)
        try:
            await self.store.manifests.put(name, reference, fetched.raw, fetched.media_type,
                                           (), settings, cached=True)
        except (ManifestInvalid, DigestInvalid) as exc:
            raise ManifestUnknown(f"upstream manifest for {reference!r} refused: {exc}",
                                  {"reference": reference}) from None
        if is_tag(reference):
            await self.store.pull_through.mark_checked(name, reference)

    # -- blobs -----------------------------------------------------------------------------------

    async def blob_size(self, name: str, digest: Digest) -> int | None:
        """HEAD of a blob not cached yet: its size upstream (None: not a cached repository)."""
        match = await self.store.pull_through.match(name)
        if match is None:
            return None
        prefix, rule = match
        upstream = await self._upstream(rule)
        try:
            return await upstream.blob_size(upstream_repository(prefix, rule, name), str(digest))
        except UpstreamError:
            raise BlobUnknown(f"blob {digest} unknown to repository",
                              {"digest": str(digest)}) from None

    async def blob(self, name: str,
                   digest: Digest) -> tuple[int | None, AsyncIterator[bytes]] | None:
        """A blob not cached yet, streamed from the upstream while it is stored; None when the
        repository is not a cache, or when another request fetched it meanwhile (read it from
        storage then)."""
        match = await self.store.pull_through.match(name)
        if match is None:
            return None
        busy = self._fetching.get(digest)
        if busy is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(busy.wait(), _WAIT_FOR_OTHER_FETCH)
            if await self.store.blobs.linked(name, digest):
                return None
            if await self.store.blobs.stored(digest) is not None:
                await self.store.blobs.link(name, digest)
                if await self.store.blobs.settled(digest):
                    return None
        # Claimed before the first await below: concurrent pulls in this process wait for us.
        done = asyncio.Event()
        self._fetching[digest] = done
        try:
            prefix, rule = match
            upstream = await self._upstream(rule)
            await self.store.repositories.for_pull_through(name)
            length, chunks, response = await upstream.blob(
                upstream_repository(prefix, rule, name), str(digest))
        except BaseException as exc:
            done.set()
            self._fetching.pop(digest, None)
            if isinstance(exc, UpstreamError):
                raise BlobUnknown(f"blob {digest} unknown to repository",
                                  {"digest": str(digest)}) from None
            raise
        return length, self._tee(name, digest, chunks, response, done)

    async def _tee(self, name: str, digest: Digest, chunks: AsyncIterator[bytes],
                   response: Any, done: asyncio.Event) -> AsyncIterator[bytes]:
        uploads = self.store.uploads
        session = await uploads.start(name, digest.algorithm)
        completed = False
        try:
            # Each piece goes to the client after it is stored, and the last one only after
            # the upload is complete: a client that has every byte may hang up at once, and
            # the blob must be committed by then.
            size = 0
            pending = bytearray()
            held: bytes | None = None
            async for chunk in chunks:
                pending += chunk
                if len(pending) >= _FLUSH:
                    data = bytes(pending)
                    pending.clear()
                    size = await uploads.append(session, _one(data), size)
                    session = dataclasses.replace(session, size=size)
                    if held is not None:
                        yield held
                    held = data
            if pending:
                data = bytes(pending)
                size = await uploads.append(session, _one(data), size)
                session = dataclasses.replace(session, size=size)
                if held is not None:
                    yield held
                held = data
            await uploads.complete(session, digest)
            completed = True
            if held is not None:
                yield held
        finally:
            await response.aclose()
            done.set()
            self._fetching.pop(digest, None)
            if not completed:
                with contextlib.suppress(Exception):
                    await uploads.cancel(session)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data

