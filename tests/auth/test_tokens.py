"""Docker-protocol bearer tokens: issue, verify, and refuse every token we did not mean."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.keys import KeyRing
from auth.tokens import CLOCK_SKEW_LEEWAY, Access, TokenError, TokenService
from tests.auth import Clock, FakeKeyStore, new_box

ISSUER, SERVICE, TTL, REFRESH_TTL = "test-issuer", "registry.test", 300, 86400
PULL = Access("repository", "team/app", ("pull", "push"))


def run(test: Callable[[TokenService, Clock], Any], algorithm: str = "ES256") -> None:
    """Run an async test body with a fresh key ring, service and clock on one event loop."""

    async def main() -> None:
        clock = Clock()
        ring = await KeyRing.load(FakeKeyStore(), new_box(), algorithm, clock=clock)
        await test(TokenService(ring, ISSUER, SERVICE, TTL, REFRESH_TTL, clock=clock), clock)

    asyncio.run(main())


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(clock: Clock, **changes: Any) -> dict[str, Any]:
    now = int(clock())
    payload = {"iss": ISSUER, "sub": "alice", "aud": SERVICE, "exp": now + TTL, "nbf": now,
               "iat": now, "jti": "j" * 22, "kind": "access", "access": [PULL.to_claim()]}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def signed(service: TokenService, payload: dict[str, Any], **header: Any) -> str:
    """Signed with the ring's real current key: valid except for what `payload` changes."""
    key = service.keyring.current
    return jwt.encode(payload, key.private_key, algorithm=key.algorithm,
                      headers={"kid": key.kid, **header})


async def refused(service: TokenService, token: str, match: str, kind: str = "access") -> None:
    with pytest.raises(TokenError, match=match) as info:
        await service.verify(token, kind=kind)
    for part in token.split("."):
        assert len(part) < 8 or part not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_issue_and_verify_round_trip(algorithm: str) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        issued = service.issue("alice", [PULL, Access("registry", "catalog", ("*",))])
        assert issued.expires_in == TTL
        assert issued.issued_at == "2023-11-14T22:13:20Z"
        assert issued.token not in repr(issued)
        header = jwt.get_unverified_header(issued.token)
        assert header == {"alg": algorithm, "typ": "JWT", "kid": service.keyring.current.kid}
        clock.now += TTL - 1
        got = await service.verify(issued.token)
        assert (got.subject, got.issuer, got.audience, got.kind) == \
            ("alice", ISSUER, SERVICE, "access")
        assert got.access == (PULL, Access("registry", "catalog", ("*",)))
        now = int(clock.now) - TTL + 1
        assert (got.issued_at, got.not_before, got.expires_at) == (now, now, now + TTL)
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", got.jti)  # 128 random bits
        assert got.jti != (await service.verify(service.issue("alice", []).token)).jti

    run(body, algorithm)


def test_tokens_verify_against_the_published_jwks() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        token = service.issue("alice", [PULL]).token
        [jwk] = service.keyring.public_jwks()["keys"]
        payload = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["ES256"], audience=SERVICE,
                             options={"verify_exp": False, "verify_nbf": False,
                                      "verify_iat": False})
        assert payload["access"] == [PULL.to_claim()]

    run(body)


def test_no_token_outlives_the_credential_it_was_bought_with() -> None:
    """A refresh or access token bought with a credential that ends sooner (an ECR
    authorization token: 12 hours) ends with it; a later one keeps its own lifetime."""
    async def body(service: TokenService, clock: Clock) -> None:
        soon = int(clock()) + 3600
        refresh = await service.verify(service.issue_refresh("alice", "g", not_after=soon),
                                       kind="refresh")
        assert refresh.expires_at == soon
        late = int(clock()) + 10 * REFRESH_TTL
        assert (await service.verify(service.issue_refresh("alice", "g", not_after=late),
                                     kind="refresh")).expires_at == int(clock()) + REFRESH_TTL
        issued = service.issue("alice", [PULL], not_after=int(clock()) + 100)
        assert issued.expires_in == 100
        assert (await service.verify(issued.token)).expires_at == int(clock()) + 100

    run(body)


def test_refresh_and_login_tokens_without_a_generation_are_refused() -> None:
    """Tokens that cannot be revoked (minted before generations existed) are not accepted."""
    async def body(service: TokenService, clock: Clock) -> None:
        for kind, generation in (("refresh", None), ("login", None), ("refresh", 7),
                                 ("login", "x" * 65)):
            now = int(clock())
            claims = {"iss": ISSUER, "sub": "alice", "aud": SERVICE, "exp": now + 60,
                      "nbf": now, "iat": now, "jti": "j", "kind": kind}
            if generation is not None:
                claims["gen"] = generation
            await refused(service, signed(service, claims), "token lacks the 'gen' claim",
                          kind=kind)
        token, _ = service.issue_login("alice", 60, "gen-2")
        assert (await service.verify(token, kind="login")).generation == "gen-2"

    run(body)


def test_refresh_tokens_round_trip_and_never_pass_as_access_tokens() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        refresh = service.issue_refresh("alice", "gen-1")
        assert "access" not in jwt.decode(refresh, options={"verify_signature": False})
        got = await service.verify(refresh, kind="refresh")
        assert (got.subject, got.kind, got.access) == ("alice", "refresh", ())
        assert got.generation == "gen-1"
        assert got.expires_at == int(clock()) + REFRESH_TTL
        await refused(service, refresh, "not an access token")
        await refused(service, service.issue("alice", [PULL]).token, "not a refresh token",
                      kind="refresh")
        clock.now += TTL + 1  # outlives access tokens
        assert (await service.verify(refresh, kind="refresh")).subject == "alice"

    run(body)


def test_rotation_old_tokens_verify_new_use_new_kid_retired_refused() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        ring = service.keyring
        old_kid, old_token = ring.current.kid, service.issue("alice", [PULL]).token
        await ring.rotate()
        new_token = service.issue("alice", [PULL]).token
        assert jwt.get_unverified_header(new_token)["kid"] == ring.current.kid != old_kid
        assert (await service.verify(old_token)).subject == "alice"
        await ring.retire(old_kid)
        await refused(service, old_token, "unknown key")
        assert (await service.verify(new_token)).subject == "alice"

    run(body)


def test_a_token_used_again_and_again_still_expires_and_keeps_its_kind() -> None:
    """A token is checked once and remembered: later uses still end at its expiry, with its
    key's retirement, and are still refused as another kind of token."""
    async def body(service: TokenService, clock: Clock) -> None:
        token = service.issue("alice", [PULL]).token
        for _ in range(3):
            assert (await service.verify(token)).access == (PULL,)
        await refused(service, token, "not a refresh token", kind="refresh")
        clock.now += TTL - 1
        assert (await service.verify(token)).subject == "alice"
        clock.now += 1
        await refused(service, token, "token expired")
        fresh = service.issue("alice", [PULL]).token
        assert (await service.verify(fresh)).subject == "alice"
        kid = service.keyring.current.kid
        await service.keyring.rotate()
        await service.keyring.retire(kid)
        await refused(service, fresh, "unknown key")

    run(body)


def test_another_replicas_new_key_is_found_by_refreshing() -> None:
    async def main() -> None:
        store, box, clock = FakeKeyStore(), new_box(), Clock()
        a, b = [TokenService(await KeyRing.load(store, box, "ES256"), ISSUER, SERVICE, TTL,
                             REFRESH_TTL, clock=clock) for _ in range(2)]
        await a.keyring.rotate()
        token = a.issue("alice", [PULL]).token
        assert (await b.verify(token)).subject == "alice"
        assert b.keyring.current.kid == a.keyring.current.kid

    asyncio.run(main())


def test_unknown_kid_refreshes_once_then_refuses() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        other = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(claims(clock), other, algorithm="ES256", headers={"kid": "x" * 43})
        store = service.keyring._store
        assert isinstance(store, FakeKeyStore)
        before = len(store.calls)
        await refused(service, token, "unknown key")
        assert ("get", "signing-keys", "current") in store.calls[before:]
        before = len(store.calls)
        await refused(service, token, "unknown key")
        assert store.calls[before:] == []  # rate-limited: no storage reads

    run(body)


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_same_kid_other_key_and_tampering_fail_the_signature(algorithm: str) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        other: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        forged = jwt.encode(claims(clock), other, algorithm=algorithm,
                            headers={"kid": service.keyring.current.kid})
        await refused(service, forged, "bad token signature")
        head, _, sig = service.issue("alice", [PULL]).token.split(".")
        await refused(service, f"{head}.{b64(claims(clock, sub='admin'))}.{sig}",
                      "bad token signature")
        flipped = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
        await refused(service, f"{head}.{b64(claims(clock))}.{flipped}", "bad token signature")

    run(body, algorithm)


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_hmac_with_the_public_key_as_secret_is_refused(algorithm: str) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        key = service.keyring.current
        pem = key.public_key.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            signing_input = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': key.kid})}." \
                            f"{b64(claims(clock))}"
            mac = hmac.new(pem, signing_input.encode(), digest).digest()
            await refused(service, f"{signing_input}.{b64(mac)}", "algorithm not accepted")

    run(body, algorithm)


def test_alg_none_and_mismatched_algorithms_are_refused() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        kid = service.keyring.current.kid
        for alg in ("none", "None", "NONE", "", None, "ES384", "PS256", "EdDSA"):
            token = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64(claims(clock))}."
            await refused(service, token, "algorithm not accepted")
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims(clock), rsa_key, algorithm="RS256", headers={"kid": kid})
        await refused(service, token, "does not match its key")  # the ring's key is EC

    run(body)


def test_missing_kid_is_refused() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        key = service.keyring.current
        await refused(service, jwt.encode(claims(clock), key.private_key, algorithm="ES256"),
                      "no key id")
        await refused(service, signed(service, claims(clock), kid=""), "no key id")

    run(body)


def test_wrong_audience_issuer_and_claim_types_are_refused() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        await refused(service, signed(service, claims(clock, aud="other")), "another service")
        await refused(service, signed(service, claims(clock, aud=[SERVICE, "other"])),
                      "another service")
        await refused(service, signed(service, claims(clock, iss="evil")), "another issuer")
        await refused(service, signed(service, claims(clock, kind="admin")), "not an access")
        await refused(service, signed(service, claims(clock, access=["repository:x:pull"])),
                      "malformed access claim")
        await refused(service, signed(service, claims(clock, access={"type": "x"})),
                      "malformed access claim")
        await refused(service, signed(service, claims(clock, exp="soon")), "malformed")
        await refused(service, signed(service, claims(clock, sub=42)), "malformed")

    run(body)


@pytest.mark.parametrize("claim",
                         ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "kind", "access"])
def test_missing_required_claims_are_refused(claim: str) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        await refused(service, signed(service, claims(clock, **{claim: None})),
                      f"lacks the '{claim}' claim")

    run(body)


def test_expiry_and_not_before_with_leeway() -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        token = service.issue("alice", [PULL]).token
        clock.now += TTL - 1
        await service.verify(token)
        clock.now += 1
        await refused(service, token, "token expired")
        clock.now -= TTL  # issued "in the future" by a replica whose clock runs ahead
        late = signed(service, claims(clock, nbf=int(clock.now) + 31))
        await refused(service, late, "not yet valid")
        skewed = claims(clock, nbf=int(clock.now) + CLOCK_SKEW_LEEWAY,
                        iat=int(clock.now) + CLOCK_SKEW_LEEWAY)
        assert (await service.verify(signed(service, skewed))).subject == "alice"
        await refused(service, signed(service, claims(clock, iat=int(clock.now) + 31)),
                      "issued in the future")

    run(body)


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c.d", "...", "é.b.c", "!!!.e30.", b64(b"not json") + ".e30.",
    b64({"alg": "ES256", "kid": 7}) + ".e30.", b64(b"[1]") + ".e30.",
])
def test_malformed_tokens_are_refused(token: str) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        with pytest.raises(TokenError, match=r"malformed|no key id|algorithm not accepted"):
            await service.verify(token)

    run(body)


def test_oversized_tokens_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(service: TokenService, clock: Clock) -> None:
        good = service.issue("alice", [PULL]).token
        head = b64({"alg": "ES256", "kid": service.keyring.current.kid, "pad": "x" * 1600})
        big_access = [Access("repository", f"r{i}", ("pull",)) for i in range(300)]
        big = service.issue("alice", big_access).token
        monkeypatch.setattr(jwt, "get_unverified_header", _must_not_parse)
        monkeypatch.setattr(jwt, "decode", _must_not_parse)
        await refused(service, f"{head}.{good.split('.', 1)[1]}", "header too large")
        await refused(service, big, "token too large")

    run(body)


def _must_not_parse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("parsed an oversized token")
