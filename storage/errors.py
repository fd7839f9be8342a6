"""Domain exceptions. They carry no HTTP: each front-end maps them in one table."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base of every error a client can cause or observe."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NameInvalid(RegistryError):
    pass


class NameUnknown(RegistryError):
    pass


class RepositoryNotCreated(NameUnknown):
    """A push to a repository that does not exist and may not be created on push. The
    message says how to create it; `message_for` adds the registry's own endpoint URL, which
    only the HTTP layer knows."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(self.message_for(None), {"name": name})

    def message_for(self, endpoint: str | None) -> str:
        endpoint_url = f" --endpoint-url {endpoint}" if endpoint else ""
        return (f"The repository with name '{self.name}' does not exist in the registry. "
                f"Create it first (aws ecr create-repository --repository-name {self.name}"
                f"{endpoint_url}), or let pushes create repositories: a repository creation "
                "template applied to CREATE_ON_PUSH, or the create_on_push setting "
                "([repositories] create_on_push = true, REGISTRY_REPOSITORIES_CREATE_ON_PUSH)")


class TagInvalid(RegistryError):
    pass


class TagImmutable(TagInvalid):
    """The tag exists, points elsewhere, and the repository keeps such tags immutable."""


class DigestInvalid(RegistryError):
    pass


class SizeInvalid(RegistryError):
    pass


class BlobUnknown(RegistryError):
    pass


class BlobUploadUnknown(RegistryError):
    pass


class BlobUploadInvalid(RegistryError):
    pass


class UploadOffsetMismatch(BlobUploadInvalid):
    """A chunk that does not start where the upload ends; the session stays usable."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, {"size": size})
        self.size = size


class UploadBusy(BlobUploadInvalid):
    """Another request is writing to the same upload session."""


class RangeNotSatisfiable(RegistryError):
    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class ManifestInvalid(RegistryError):
    pass


class ManifestTooLarge(ManifestInvalid):
    pass


class ManifestUnknown(RegistryError):
    pass


class ManifestBlobUnknown(RegistryError):
    pass


class ManifestChildUnknown(ManifestBlobUnknown):
    """An index names a manifest the repository does not hold."""


class PaginationInvalid(RegistryError):
    pass


class Unsupported(RegistryError):
    pass


class RateLimited(RegistryError):
    """Too many requests of one class from one identity or address; retry after a while."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(RegistryError):
    """The backend failed in a way the client did not cause (retryable)."""

    retry_after = 5  # seconds a client had best wait before trying again


class StorageFull(StorageUnavailable):
    """No space left (a full disk, a quota, a bucket quota): writes fail until an operator
    frees space; reads go on."""

    retry_after = 30


class StorageNotWritable(StorageUnavailable):
    """The backend refuses writes (a read-only mount, a directory owned by another user, an
    S3 policy): reads may go on."""

    retry_after = 30


# Driver-level errors: keys and bytes, no registry meaning.


class DriverError(Exception):
    pass


class KeyNotFound(DriverError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class OffsetMismatch(DriverError):
    def __init__(self, key: str, size: int) -> None:
        super().__init__(f"{key}: append at wrong offset, size is {size}")
        self.size = size


class KeyBusy(DriverError):
    """An exclusive writer already holds the key."""
