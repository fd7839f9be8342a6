"""Repository name and tag grammar from the OCI Distribution Spec, with our length limits."""

from __future__ import annotations

import re

from storage.errors import NameInvalid, TagInvalid
from storage.paths import MAX_NAME_COMPONENT

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

MAX_NAME_LENGTH = 255
# Each component becomes a file name in storage, some with a suffix (storage/paths.py).
MAX_COMPONENT_LENGTH = MAX_NAME_COMPONENT
MAX_TAG_LENGTH = 128


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:100]!r}")
    check_components(name)
    return name


def check_components(name: str) -> None:
    """A name or name prefix whose every `/`-separated component fits in storage."""
    if len(name) > MAX_COMPONENT_LENGTH and any(
            len(part) > MAX_COMPONENT_LENGTH for part in name.split("/")):
        raise NameInvalid(f"a repository name component is longer than {MAX_COMPONENT_LENGTH} "
                          f"characters: {name[:100]!r}")


def is_tag(reference: str) -> bool:
    return ":" not in reference


def check_tag(tag: str) -> str:
    if len(tag) > MAX_TAG_LENGTH:
        raise TagInvalid(f"tag longer than {MAX_TAG_LENGTH} characters")
    if not _TAG.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:100]!r}")
    return tag
