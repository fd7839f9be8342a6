"""The registry's storage, assembled from one driver."""

from __future__ import annotations

from collections.abc import Iterable

from storage.audit import AuditLog
from storage.blobs import BlobStore
from storage.caches import PULLS_REMEMBERED, PullCache
from storage.drivers.base import Driver
from storage.events import EventQueue, Subscription
from storage.iam import IamStore
from storage.leases import Leases
from storage.lifecycle import LifecycleStore
from storage.manifests import ManifestStore
from storage.pullthrough import PullThroughStore
from storage.repositories import RepositoryStore
from storage.sweeps import Sweeps
from storage.templates import TemplateStore
from storage.uploads import UploadStore


class Store:
    def __init__(self, driver: Driver, create_on_push: bool = False,
                 subscriptions: Iterable[Subscription] = (), tag_cache_seconds: float = 0.0
                 ) -> None:
        self.driver = driver
        self.events = EventQueue(driver, subscriptions)
        self.templates = TemplateStore(driver)
        self.pulls = PullCache(tag_cache_seconds, PULLS_REMEMBERED)  # what pulls may skip
        self.repositories = RepositoryStore(driver, self.templates, create_on_push, self.pulls)
        self.sweeps = Sweeps(driver)
        self.blobs = BlobStore(driver, self.repositories, self.sweeps, self.pulls)
        self.uploads = UploadStore(driver, self.blobs)
        self.manifests = ManifestStore(driver, self.repositories, self.blobs, self.events,
                                       self.pulls)
        self.audit = AuditLog(driver)
        self.lifecycle = LifecycleStore(driver, self.manifests, self.audit)
        self.iam = IamStore(driver)
        self.leases = Leases(driver)
        self.pull_through = PullThroughStore(driver)

    async def close(self) -> None:
        await self.driver.close()
