"""Small JSON records kept beside the content (revision, tag, upload session)."""

from __future__ import annotations

import json
from typing import Any

from storage.content.jsontext import loads
from storage.errors import StorageUnavailable

MAX_RECORD = 64 * 1024


def dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def load(data: bytes, key: str) -> dict[str, Any]:
    try:
        value = loads(data)
    except ValueError:
        raise StorageUnavailable(f"corrupt record at {key}") from None
    if not isinstance(value, dict):
        raise StorageUnavailable(f"corrupt record at {key}")
    return value
