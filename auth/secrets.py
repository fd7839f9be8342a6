"""Secrets at rest and passwords: AES-256-GCM under the configured key, scrypt for passwords.

Secret values never appear in logs, errors or reprs; comparisons are constant-time."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1  # about 32 MiB and 50-100 ms per check
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class SecretKeyError(ValueError):
    pass


def generate_secret_key() -> str:
    """A new value for `auth.secret_key` (base64 of 32 random bytes)."""
    return base64.b64encode(os.urandom(32)).decode()


class SecretBox:
    """Encrypts small secrets (access-key secrets, signing keys) for storage.

    `context` binds a ciphertext to its use (for example the access key id), so one record's
    secret cannot be swapped into another's."""

    def __init__(self, key: str) -> None:
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise SecretKeyError("auth.secret_key must be base64 (32 bytes)") from None
        if len(raw) != 32:
            raise SecretKeyError("auth.secret_key must decode to exactly 32 bytes")
        self._aead = AESGCM(raw)

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> bytes:
        if not token.startswith("v1:"):
            raise SecretKeyError("unknown secret format")
        try:
            raw = base64.b64decode(token[3:], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretKeyError("cannot decrypt a stored secret: wrong auth.secret_key?") \
                from None


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    encoded_salt = base64.b64encode(salt).decode()
    encoded_digest = base64.b64encode(digest).decode()
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded_salt}${encoded_digest}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))


def verify_or_burn(password: str, encoded: str | None) -> bool:
    """Check a password; for unknown users (None) spend the same time and fail, so timing does
    not tell which user names exist."""
    if encoded is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, encoded)


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
