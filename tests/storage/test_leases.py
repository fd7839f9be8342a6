"""Leases on every driver: replicas that find the same lapsed lease at the same moment."""

from __future__ import annotations

import asyncio

from storage.drivers import Driver
from storage.leases import Leases


async def test_replicas_taking_a_lapsed_lease_at_once(driver: Driver) -> None:
    """Several replicas see a lapsed lease and take it over together: none fails (a replica
    whose delete crosses another's new lease has simply lost), and one of those that won
    holds it."""
    for round_ in range(10):
        await Leases(driver).acquire("job", 1, now=1000.0 * round_)
        replicas = [Leases(driver) for _ in range(4)]
        won = await asyncio.gather(*(r.acquire("job", 60, now=1000.0 * round_ + 10)
                                     for r in replicas))
        assert any(won), round_
        holders = [r for r, ok in zip(replicas, won, strict=True) if ok]
        # The last winner's record stands; it renews, any other is refused until it lapses.
        renewed = [await r.acquire("job", 60, now=1000.0 * round_ + 20) for r in holders]
        assert renewed.count(True) == 1, (round_, won, renewed)
