"""The one table from domain exceptions to ECR's JSON error `__type` and status."""

from __future__ import annotations

from typing import Any

from storage import errors as e
from storage import lifecycle


class EcrError(Exception):
    """An error with ECR's own name; `type` is the `__type` botocore turns into its class."""

    def __init__(self, type_: str, message: str, status: int = 400,
                 fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status
        self.fields = fields or {}  # extra members of the error shape (botocore exposes them)


def invalid(message: str) -> EcrError:
    return EcrError("InvalidParameterException", message)


def repository_not_found(name: str, account: str) -> EcrError:
    return EcrError("RepositoryNotFoundException",
                    f"The repository with name '{name}' does not exist in the registry "
                    f"with id '{account}'")


# Domain exceptions that can reach the control plane, by class (most specific first).
ECR_ERRORS: dict[type[Exception], tuple[str, int]] = {
    e.NameInvalid: ("InvalidParameterException", 400),
    e.SizeInvalid: ("LimitExceededException", 400),
    lifecycle.LifecyclePolicyInvalid: ("InvalidParameterException", 400),
    lifecycle.LifecyclePolicyNotFound: ("LifecyclePolicyNotFoundException", 400),
    e.TagImmutable: ("ImageTagAlreadyExistsException", 400),
    e.TagInvalid: ("InvalidParameterException", 400),
    e.DigestInvalid: ("InvalidParameterException", 400),
    e.NameUnknown: ("RepositoryNotFoundException", 400),
    e.ManifestUnknown: ("ImageNotFoundException", 400),
    e.BlobUnknown: ("LayersNotFoundException", 400),
    e.BlobUploadUnknown: ("UploadNotFoundException", 400),
    e.ManifestChildUnknown: ("ReferencedImagesNotFoundException", 400),
    e.ManifestBlobUnknown: ("LayersNotFoundException", 400),
    e.ManifestInvalid: ("InvalidParameterException", 400),
    e.RateLimited: ("ThrottlingException", 400),
    e.StorageUnavailable: ("ServerException", 503),  # with Retry-After; SDKs retry it
}


# Whatever the table does not name, down to errors nobody expected.
UNEXPECTED = ("ServerException", 500)


def lookup(exc: Exception) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls in ECR_ERRORS:
            return ECR_ERRORS[cls]
    return UNEXPECTED
