"""Signing keys: stored encrypted, shared by replicas, rotated and retired."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.keys import CURRENT, KIND, KeyRing, KeyRingError, jwk_members, jwk_thumbprint
from storage.drivers.filesystem import FilesystemDriver
from storage.iam import IamStore
from tests.auth import Clock, FakeKeyStore, new_box

ALGORITHMS = ["ES256", "RS256"]
# RFC 7638 section 3.1.
RFC_N = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
         "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
         "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
         "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")


def key_names(store: FakeKeyStore) -> list[str]:
    return sorted(name for kind, name in store.records if kind == KIND and name != CURRENT)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    members = {"e": "AQAB", "kty": "RSA", "n": RFC_N}
    assert jwk_thumbprint(members) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_first_load_creates_and_stores_one_encrypted_key(algorithm: str) -> None:
    store, box = FakeKeyStore(), new_box()
    ring = asyncio.run(KeyRing.load(store, box, algorithm))
    key = ring.current
    assert key.algorithm == algorithm
    assert key.kid == jwk_thumbprint(jwk_members(key.public_key))
    if algorithm == "ES256":
        assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
        assert key.private_key.curve.name == "secp256r1"
    else:
        assert isinstance(key.private_key, rsa.RSAPrivateKey)
        assert key.private_key.key_size == 2048
    assert key_names(store) == [key.kid]
    assert store.record(CURRENT) == {"kid": key.kid}
    record = store.record(key.kid)
    assert set(record) == {"kid", "algorithm", "createdAt", "privateKey"}
    assert record["privateKey"].startswith("v1:")
    assert "PRIVATE KEY" not in json.dumps(record)
    assert set(ring.verification_keys) == {key.kid}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_second_load_reads_the_same_key(algorithm: str) -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        first = await KeyRing.load(store, box, algorithm)
        second = await KeyRing.load(store, box, algorithm)
        assert second.current == first.current
        assert second.current.public_jwk() == first.current.public_jwk()
        assert len(key_names(store)) == 1

    asyncio.run(main())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_concurrent_first_starts_converge_on_one_key(algorithm: str) -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        rings = await asyncio.gather(*(KeyRing.load(store, box, algorithm) for _ in range(3)))
        assert len({ring.current.kid for ring in rings}) == 1
        assert key_names(store) == [rings[0].current.kid]
        # The race really happened: two of the three lost the pointer and adopted the winner.
        assert [created for name, created in store.created if name == CURRENT] \
            == [True, False, False]

    asyncio.run(main())


def test_concurrent_first_starts_on_a_filesystem_iam_store(tmp_path: Path) -> None:
    async def main() -> None:
        store, box = IamStore(FilesystemDriver(tmp_path)), new_box()
        rings = await asyncio.gather(*(KeyRing.load(store, box, "ES256") for _ in range(4)))
        assert len({ring.current.kid for ring in rings}) == 1
        assert sorted(await store.names(KIND)) == sorted([CURRENT, rings[0].current.kid])

    asyncio.run(main())


def test_jwks_holds_public_keys_only() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        old = (await KeyRing.load(store, box, "ES256", clock=Clock(1000))).current
        ring = await KeyRing.load(store, box, "RS256", clock=Clock(2000))  # rotates to RSA
        jwks = ring.public_jwks()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [ring.current.kid, old.kid]
        assert [jwk["alg"] for jwk in jwks["keys"]] == ["RS256", "ES256"]
        for jwk in jwks["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(jwk)
            assert jwk["use"] == "sig"
            expected = {"kty", "crv", "x", "y"} if jwk["alg"] == "ES256" else {"kty", "n", "e"}
            assert set(jwk) == expected | {"kid", "alg", "use"}
        json.dumps(jwks)

    asyncio.run(main())


def test_private_keys_stay_out_of_reprs() -> None:
    ring = asyncio.run(KeyRing.load(FakeKeyStore(), new_box(), "ES256"))
    key = ring.current
    assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
    secret = str(key.private_key.private_numbers().private_value)
    for text in (repr(key), str(key), repr(ring)):
        assert secret not in text
        assert "private_key" not in text


def test_a_wrong_secret_key_gives_a_clear_error() -> None:
    async def main() -> None:
        store = FakeKeyStore()
        ring = await KeyRing.load(store, new_box(), "ES256")
        with pytest.raises(KeyRingError) as info:
            await KeyRing.load(store, new_box(), "ES256")
        message = str(info.value)
        assert "auth.secret_key" in message and ring.current.kid in message
        assert store.record(ring.current.kid)["privateKey"] not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__

    asyncio.run(main())


def test_a_sealed_key_cannot_be_moved_to_another_record() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        ring = await KeyRing.load(store, box, "ES256")
        old, new = ring.current.kid, (await ring.rotate()).kid
        swapped = {**store.record(new), "privateKey": store.record(old)["privateKey"]}
        await store.put(KIND, new, swapped)
        with pytest.raises(KeyRingError, match="cannot decrypt"):
            await KeyRing.load(store, box, "ES256")

    asyncio.run(main())


def test_malformed_record_stops_load_but_not_refresh() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        ring = await KeyRing.load(store, box, "ES256")
        await store.put(KIND, "A" * 43, {"kid": "A" * 43, "algorithm": "HS256"})
        with pytest.raises(KeyRingError, match="malformed"):
            await KeyRing.load(store, box, "ES256")
        assert await ring.refresh()
        assert set(ring.verification_keys) == {ring.current.kid}

    asyncio.run(main())


def test_rotate_and_retire() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        ring = await KeyRing.load(store, box, "ES256")
        old = ring.current
        new = await ring.rotate()
        assert ring.current == new != old
        assert store.record(CURRENT) == {"kid": new.kid}
        assert set(ring.verification_keys) == {old.kid, new.kid}
        assert (await KeyRing.load(store, box, "ES256")).current == new
        with pytest.raises(KeyRingError, match="rotate first"):
            await ring.retire(new.kid)
        with pytest.raises(KeyRingError, match="no signing key"):
            await ring.retire("B" * 43)
        await ring.retire(old.kid)
        await ring.retire(old.kid)  # idempotent
        assert set(ring.verification_keys) == {new.kid}
        assert [jwk["kid"] for jwk in ring.public_jwks()["keys"]] == [new.kid]
        assert "retiredAt" in store.record(old.kid)
        reloaded = await KeyRing.load(store, box, "ES256")
        assert set(reloaded.verification_keys) == {new.kid}

    asyncio.run(main())


def test_refresh_adopts_another_replicas_rotation_and_is_rate_limited() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        a = await KeyRing.load(store, box, "ES256")
        b = await KeyRing.load(store, box, "ES256")
        new = await a.rotate()
        assert await b.refresh()
        assert b.current == new and set(b.verification_keys) == set(a.verification_keys)
        await a.rotate()
        assert not await b.refresh()  # within 5 s of the last one
        assert b.current == new

    asyncio.run(main())


def test_changing_the_algorithm_rotates_and_keeps_old_keys_verifying() -> None:
    async def main() -> None:
        store, box = FakeKeyStore(), new_box()
        es = await KeyRing.load(store, box, "ES256")
        rs = await KeyRing.load(store, box, "RS256")
        assert rs.current.algorithm == "RS256"
        assert set(rs.verification_keys) == {es.current.kid, rs.current.kid}
        assert store.record(CURRENT) == {"kid": rs.current.kid}

    asyncio.run(main())


def test_unsupported_algorithm_is_refused() -> None:
    with pytest.raises(KeyRingError, match="HS256"):
        KeyRing(FakeKeyStore(), new_box(), "HS256")
