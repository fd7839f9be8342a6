"""Storage drivers, picked by name from a table of import strings so optional
dependencies (boto3) load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from storage.drivers.base import Driver, Stat

DRIVERS: dict[str, str] = {
    "filesystem": "storage.drivers.filesystem:FilesystemDriver",
    "s3": "storage.drivers.s3:S3Driver",
}


def load_driver(name: str, **options: Any) -> Driver:
    try:
        target = DRIVERS[name]
    except KeyError:
        choices = sorted(DRIVERS)
        raise ValueError(f"unknown storage driver {name!r}; choose one of {choices}") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    driver: Driver = cls(**options)
    return driver


__all__ = ["DRIVERS", "Driver", "Stat", "load_driver"]
