"""Replication: the jobs queued for each destination (storage/replication.py) copied to it over
its /v2/ API, in queue order, one copier per destination chosen by a lease in storage.

A job copies one pushed image: the manifest by digest (for an index, its child manifests
first), each blob it needs that the destination lacks (HEAD, then a cross-repository mount,
else an upload streamed from our storage), then the tag. Everything is idempotent, so a job
cut short by a crash is simply done again. A failure is retried with exponential backoff and
holds back the jobs behind it; after `max_attempts` the job is dead-lettered and the image's
status becomes FAILED.

The destination repository must exist or be creatable by the push: create-on-push (or, on
ECR, a repository creation template) on the destination. Deletes are never replicated.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx

from registry.queue_worker import BATCH, LEASE_TTL, POLL, counter, retry_delay, work_forever
from registry.settings import ReplicationDestination, Settings
from storage.content.digest import Digest
from storage.content.jsontext import loads
from storage.content.manifest import Descriptor, parse_manifest
from storage.errors import DigestInvalid, ManifestUnknown
from storage.replication import COMPLETE, FAILED, ReplicationStore, Target, queue_name
from storage.store import Store

if TYPE_CHECKING:
    from registry.observability import Metrics

log = logging.getLogger("registry")
PERMANENT = ("SOURCE_IMAGE_MISSING", "UNSUPPORTED_IMAGE")  # failure codes not worth retrying
MAX_DEPTH = 4  # an index of indexes of ...: deeper than this is refused
_HOMES = 4096  # blobs remembered per destination, with a repository there that holds them
_PARAM = re.compile(r'(\w+)="([^"]*)"')
OCTET = "application/octet-stream"
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "*/*;q=0.1",
])


class CannotReplicate(Exception):
    """A job that cannot succeed however often it is tried: what it should copy is no longer
    here (deleted, collected), or is not something we copy. Dead-lettered at once."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _missing(message: str) -> CannotReplicate:
    return CannotReplicate("SOURCE_IMAGE_MISSING", message)


class DestinationError(Exception):
    """The destination refused or failed; `code` is the image's failureCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _refused(response: httpx.Response, what: str) -> DestinationError:
    """The failure an answer means, with its status and OCI error code (nothing else of the
    body: no echo of anything sent)."""
    status = response.status_code
    oci = ""
    with contextlib.suppress(Exception):
        errors = response.json().get("errors") or []
        oci = str(errors[0].get("code"))[:40] if errors else ""
    code = {401: "DESTINATION_AUTHENTICATION_FAILED",
            403: "DESTINATION_ACCESS_DENIED"}.get(status, "DESTINATION_ERROR")
    if oci == "NAME_UNKNOWN":
        code = "DESTINATION_REPOSITORY_NOT_FOUND"  # no create-on-push there
    return DestinationError(code, f"{what}: HTTP {status}" + (f" ({oci})" if oci else ""))


class Destination:
    """A client of the destination's /v2/ API that pushes: anonymous, Basic when challenged
    for it, or the Docker token flow (a 401 with a Bearer challenge names the realm; a token
    for the scopes is fetched with Basic credentials, cached until shortly before it expires,
    and the request made again). No credential or header value is ever logged."""

    def __init__(self, config: ReplicationDestination) -> None:
        self.base = config.url.rstrip("/")
        self.config = config
        self.client = httpx.AsyncClient(timeout=config.timeout)
        self._basic = False  # the destination asked for Basic credentials
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes: token, use until

    async def close(self) -> None:
        await self.client.aclose()

    def _credentials(self) -> str | None:
        if not self.config.username or self.config.password is None:
            return None
        pair = f"{self.config.username}:{self.config.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authorization(self, scopes: tuple[str, ...]) -> dict[str, str]:
        cached = self._tokens.get(scopes)
        if cached is not None and cached[1] > time.time():
            return {"Authorization": f"Bearer {cached[0]}"}
        basic = self._credentials()
        if self._basic and basic is not None:
            return {"Authorization": basic}
        return {}

    async def _send(self, method: str, url: str, scopes: tuple[str, ...],
                    headers: dict[str, str] | None = None, body: bytes | None = None,
                    params: dict[str, str] | None = None) -> httpx.Response:
        """A request whose body can be sent again: answers one authentication challenge."""
        headers = headers or {}
        response = await self.client.request(method, url, params=params, content=body,
                                             headers={**headers, **self._authorization(scopes)})
        if response.status_code != 401:
            return response
        if not await self._answer(response.headers.get("www-authenticate", ""), scopes):
            return response
        return await self.client.request(method, url, params=params, content=body,
                                         headers={**headers, **self._authorization(scopes)})

    async def _answer(self, challenge: str, scopes: tuple[str, ...]) -> bool:
        """Learn how to authenticate from a challenge; whether a retry may now succeed."""
        kind = challenge.split(" ", 1)[0].lower()
        basic = self._credentials()
        if kind == "basic":
            if basic is None or self._basic:
                return False
            self._basic = True
            return True
        params = dict(_PARAM.findall(challenge))
        realm = params.get("realm")
        if kind != "bearer" or not realm:
            return False
        query = [("service", params.get("service", ""))] + [("scope", s) for s in scopes]
        answer = await self.client.get(realm, params=query,
                                       headers={"Authorization": basic} if basic else {})
        if answer.status_code != 200:
            raise _refused(answer, "token request")
        try:
            body = loads(answer.content)  # bounded: the destination may be hostile
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in", 60))
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str):
            raise DestinationError("DESTINATION_AUTHENTICATION_FAILED",
                                   "the token endpoint answered without a token")
        # Used while it has a while to live: a blob upload starting with it must not find it
        # expired (its body cannot be sent again after a challenge).
        now = time.time()
        if len(self._tokens) > 1000:  # one per repository (and mount source): drop stale ones
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[scopes] = (token, now + max(lifetime - 30, lifetime / 2))
        return True

    def _url(self, path: str) -> str:
        return f"{self.base}{path}"

    @staticmethod
    def _scopes(repository: str, source: str | None = None) -> tuple[str, ...]:
        scopes = (f"repository:{repository}:pull,push",)
        return scopes + ((f"repository:{source}:pull",) if source else ())

    async def has_manifest(self, repository: str, digest: Digest) -> bool:
        response = await self._send("HEAD", self._url(f"/v2/{repository}/manifests/{digest}"),
                                    self._scopes(repository), {"Accept": MANIFEST_TYPES})
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise _refused(response, f"HEAD manifest {digest}")

    async def has_blob(self, repository: str, digest: Digest) -> bool:
        response = await self._send("HEAD", self._url(f"/v2/{repository}/blobs/{digest}"),
                                    self._scopes(repository))
        if response.status_code in (200, 307):
            return True
        if response.status_code == 404:
            return False
        raise _refused(response, f"HEAD blob {digest}")

    async def start_upload(self, repository: str, digest: Digest,
                           source: str | None) -> str | None:
        """Mount the blob (from `source`, a repository there that has it, when known);
        None when mounted, else the upload session's URL."""
        params = {"mount": str(digest)}
        if source is not None:
            params["from"] = source
        response = await self._send("POST", self._url(f"/v2/{repository}/blobs/uploads/"),
                                    self._scopes(repository, source), params=params)
        if response.status_code == 201:
            return None
        location = str(response.headers.get("location", ""))
        if response.status_code != 202 or not location:
            raise _refused(response, f"starting the upload of {digest}")
        return urljoin(self._url("/"), location)

    async def upload(self, repository: str, location: str, digest: Digest, size: int,
                     chunks: AsyncIterator[bytes], source: str | None = None) -> None:
        """Stream the blob in one PATCH (as docker does), then close the session with its
        digest. The body cannot be sent twice: the POST that opened the session, with the same
        scopes, settled authentication (a token is used only while it has a while to live)."""
        scopes = self._scopes(repository, source)
        if size > 0:
            headers = {"Content-Type": OCTET, "Content-Length": str(size),
                       **self._authorization(scopes)}
            response = await self.client.request("PATCH", location, content=chunks,
                                                 headers=headers)
            if response.status_code != 202:
                raise _refused(response, f"uploading {digest}")
            location = urljoin(location, response.headers.get("location") or location)
        url = httpx.URL(location).copy_merge_params({"digest": str(digest)})
        response = await self._send("PUT", str(url), scopes, {"Content-Type": OCTET}, b"")
        if response.status_code != 201:
            raise _refused(response, f"completing the upload of {digest}")

    async def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str,
                           digest: Digest) -> None:
        response = await self._send("PUT", self._url(f"/v2/{repository}/manifests/{reference}"),
                                    self._scopes(repository), {"Content-Type": media_type}, raw)
        if response.status_code not in (200, 201):
            raise _refused(response, f"PUT manifest {reference}")
        answered = response.headers.get("docker-content-digest")
        if answered is not None and answered != str(digest):
            raise DestinationError("DESTINATION_ERROR",
                                   f"the destination stored {reference} as {answered[:80]}, "
                                   f"not {digest}")


def replication_store(store: Store, settings: Settings) -> ReplicationStore:
    """The process's replication store, attached to the event queue as a subscription source
    (once) when destinations are configured."""
    for source in store.events.sources:
        if isinstance(source, ReplicationStore):
            return source
    destinations = settings.replication.destinations

    async def pull_through(name: str) -> bool:
        return await store.pull_through.match(name) is not None

    found = ReplicationStore(store.driver,
                             [Target(d.name, d.region, d.registry_id) for d in destinations],
                             pull_through)
    if destinations:
        store.events.add_source(found)
    return found


class Copier:
    """Copies images from our storage to one destination."""

    def __init__(self, store: Store, destination: Destination) -> None:
        self.store = store
        self.destination = destination
        self._homes: OrderedDict[Digest, str] = OrderedDict()  # blob -> repository there

    async def copy(self, repository: str, digest: Digest, tag: str | None) -> None:
        media_type, raw = await self._manifest(repository, digest, 0)
        if tag is not None:
            await self.destination.put_manifest(repository, tag, raw, media_type, digest)

    async def _manifest(self, repository: str, digest: Digest, depth: int) -> tuple[str, bytes]:
        try:
            stored = await self.store.manifests.get(repository, str(digest))
        except ManifestUnknown:
            raise _missing(f"manifest {digest} is no longer in {repository}") from None
        if await self.destination.has_manifest(repository, digest):
            return stored.media_type, stored.raw
        manifest = parse_manifest(stored.raw, stored.media_type, digest.algorithm)
        if manifest.manifests and depth >= MAX_DEPTH:
            raise CannotReplicate("UNSUPPORTED_IMAGE",
                                  f"index {digest} nests deeper than {MAX_DEPTH} levels")
        for child in manifest.manifests:
            await self._manifest(repository, child.digest, depth + 1)
        for blob in manifest.blobs:
            await self._blob(repository, blob)
        await self.destination.put_manifest(repository, str(digest), stored.raw,
                                            stored.media_type, digest)
        return stored.media_type, stored.raw

    async def _blob(self, repository: str, blob: Descriptor) -> None:
        digest = blob.digest
        if await self.destination.has_blob(repository, digest):
            self._remember(digest, repository)
            return
        size = await self.store.blobs.stored(digest)
        if size is None:
            raise _missing(f"blob {digest} is no longer stored")
        home = self._homes.get(digest)
        source = home if home != repository else None
        location = await self.destination.start_upload(repository, digest, source)
        if location is not None:
            chunks = self.store.blobs.read(digest)
            try:
                await self.destination.upload(repository, location, digest, size, chunks,
                                              source)
            finally:
                await _close(chunks)
        self._remember(digest, repository)

    def _remember(self, digest: Digest, repository: str) -> None:
        self._homes[digest] = repository
        self._homes.move_to_end(digest)
        while len(self._homes) > _HOMES:
            self._homes.popitem(last=False)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def replicate_forever(settings: Settings, store: Store,
                            destination: ReplicationDestination,
                            metrics: Metrics | None = None) -> None:
    """One copier per destination across the replicas (should another replica take over
    during a long copy, the copies are merely done twice)."""
    count = counter(metrics.replications if metrics is not None else None, destination.name)
    replication = replication_store(store, settings)
    copier = Copier(store, Destination(destination))
    try:
        await work_forever(
            store, queue_name(destination.name), f"replication to {destination.name}",
            lambda lease: _replicate_batch(store, replication, destination, copier, count))
    finally:
        await copier.destination.close()


async def _replicate_batch(store: Store, replication: ReplicationStore,
                           destination: ReplicationDestination, copier: Copier,
                           count: Callable[[str], None]) -> float:
    """Copy queued images in order until one fails or the batch ends; how long to wait
    before looking again."""
    queue = store.events
    name = queue_name(destination.name)
    head = await queue.pending(name, 1)
    if not head:
        return POLL
    wait = float(head[0][1].get("retryAt", 0)) - time.time()
    if wait > 0:  # the head of the queue is backing off: nothing behind it may go first
        return min(wait, LEASE_TTL / 3)
    batch = await queue.pending(name, BATCH)
    for key, record in batch:
        wait = float(record.get("retryAt", 0)) - time.time()
        if wait > 0:
            return min(wait, LEASE_TTL / 3)  # the head of the queue is backing off
        event: dict[str, Any] = record["event"]
        try:
            digest = Digest.parse(str(event["digest"]))
        except (KeyError, DigestInvalid):
            await queue.delivered(key)  # not a job we can do anything with
            continue
        if event.get("action") != "PUSH":
            await queue.delivered(key)
            continue
        repository, event_id = str(event["repository"]), str(event["id"])
        code, error = await _attempt(copier, repository, digest, event.get("tag"))
        if code is None:
            await replication.finished(repository, digest, destination.name, event_id,
                                       COMPLETE)
            await queue.delivered(key)
            count("copied")
            continue
        attempts = int(record.get("attempts", 0)) + 1
        if code in PERMANENT or attempts >= destination.max_attempts:
            log.warning("replication of %s@%s to %s failed %d time(s) (%s): dead-lettered",
                        repository, digest, destination.name, attempts, error)
            await replication.finished(repository, digest, destination.name, event_id,
                                       FAILED, code)
            await queue.bury(name, key, record, error)
            count("dead")
            continue
        count("failed")
        delay = retry_delay(destination, attempts)
        log.info("replication of %s@%s to %s failed (%s); retrying in %.1fs", repository,
                 digest, destination.name, error, delay)
        await queue.failed(key, record, error, time.time() + delay)
        return min(delay, LEASE_TTL / 3)
    return 0.0 if len(batch) == BATCH else POLL


async def _attempt(copier: Copier, repository: str, digest: Digest,
                   tag: Any) -> tuple[str | None, str]:
    """Copy one image; (None, "") on success, else (failure code, what went wrong)."""
    try:
        await copier.copy(repository, digest, tag if isinstance(tag, str) else None)
    except CannotReplicate as exc:
        return exc.code, str(exc)
    except DestinationError as exc:
        return exc.code, str(exc)
    except httpx.HTTPError as exc:
        return "DESTINATION_UNREACHABLE", type(exc).__name__
    except Exception as exc:
        log.exception("replicating %s@%s failed", repository, digest)
        return "INTERNAL_ERROR", type(exc).__name__
    return None, ""
