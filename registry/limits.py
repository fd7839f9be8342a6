"""Rate limits per identity (or, for anonymous callers, per address) and API class, and a cap
on concurrent upload requests; both per replica (in-process token buckets).

API classes are ECR's operations; the data plane's requests count as the operation ECR would
run for them (a manifest GET is BatchGetImage, a blob GET GetDownloadUrlForLayer, ...). The
default rates are ECR's published per-second quotas; a class may be given its own."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from registry.settings import LimitsSettings
from storage.errors import RateLimited

# ECR's published rates (requests per second), the defaults here.
ECR_RATES: dict[str, float] = {
    "BatchCheckLayerAvailability": 1000, "BatchGetImage": 2000, "CompleteLayerUpload": 100,
    "GetAuthorizationToken": 500, "GetDownloadUrlForLayer": 3000, "InitiateLayerUpload": 100,
    "PutImage": 10, "UploadLayerPart": 500,
}
DEFAULT_RATE = 100.0  # every other operation
_BUCKETS = 100_000

# The data plane's requests as the ECR operations they stand for: (route, method) -> class.
DATA_PLANE: dict[tuple[str, str], str] = {
    ("manifest", "GET"): "BatchGetImage", ("manifest", "HEAD"): "BatchGetImage",
    ("manifest", "PUT"): "PutImage", ("manifest", "DELETE"): "BatchDeleteImage",
    ("blob", "GET"): "GetDownloadUrlForLayer", ("blob", "HEAD"): "BatchCheckLayerAvailability",
    ("blob", "DELETE"): "BatchDeleteImage",
    ("blob_upload", "POST"): "InitiateLayerUpload", ("blob_upload", "PATCH"): "UploadLayerPart",
    ("blob_upload", "PUT"): "CompleteLayerUpload", ("blob_upload", "GET"): "DescribeImages",
    ("blob_upload", "DELETE"): "InitiateLayerUpload",
    ("tags", "GET"): "ListImages", ("catalog", "GET"): "DescribeRepositories",
    ("referrers", "GET"): "ListImageReferrers", ("token", "GET"): "GetAuthorizationToken",
    ("token", "POST"): "GetAuthorizationToken",
}


class RateLimiter:
    def __init__(self, settings: LimitsSettings) -> None:
        self.settings = settings
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self.uploads = 0

    def rate(self, api_class: str) -> float:
        configured = self.settings.rates.get(api_class)
        if configured is not None:
            return float(configured)
        return ECR_RATES.get(api_class, DEFAULT_RATE) * self.settings.scale

    @staticmethod
    def class_of(route: str | None, method: str) -> str | None:
        """The API class a data-plane request counts as (None: not limited)."""
        return DATA_PLANE.get((route, method)) if route is not None else None

    def check(self, api_class: str, who: str) -> None:
        """Take one request from the caller's bucket for the class; RateLimited if empty."""
        if not self.settings.enabled:
            return
        rate = self.rate(api_class)
        if rate <= 0:
            return
        burst = max(1.0, rate * self.settings.burst_seconds)
        now = time.monotonic()
        key = (api_class, who)
        tokens, last = self._buckets.pop(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) / rate)
            raise RateLimited(f"rate exceeded for {api_class}: {rate:g} requests per second; "
                              f"retry in {wait} s", max(1, wait))
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > _BUCKETS:
            self._buckets.popitem(last=False)

    def start_upload(self) -> None:
        """Count an upload request in flight; RateLimited past the cap."""
        cap = self.settings.max_concurrent_uploads
        if cap > 0 and self.uploads >= cap:
            raise RateLimited(f"too many uploads in progress on this server (at most {cap}); "
                              "retry shortly", 1)
        self.uploads += 1

    def end_upload(self) -> None:
        self.uploads = max(0, self.uploads - 1)
