"""Digests: `algorithm:encoded`, validated against the OCI grammar and the algorithms we support."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from storage.errors import DigestInvalid

# OCI image-spec descriptor grammar: algorithm-component(separator algorithm-component)*:encoded
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")

# Registered algorithms and the exact form of their encoded part.
ALGORITHMS: dict[str, re.Pattern[str]] = {
    "sha256": re.compile(r"^[a-f0-9]{64}$"),
    "sha512": re.compile(r"^[a-f0-9]{128}$"),
}


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if len(text) > 256 or not _GRAMMAR.fullmatch(text):
            raise DigestInvalid(f"invalid digest {text[:80]!r}")
        algorithm, _, encoded = text.partition(":")
        pattern = ALGORITHMS.get(algorithm)
        if pattern is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if not pattern.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {text[:80]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @classmethod
    def from_hasher(cls, algorithm: str, hasher: Any) -> Digest:
        return cls(algorithm, hasher.hexdigest())

    def hasher(self) -> Any:
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def new_hasher(algorithm: str) -> Any:
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)
