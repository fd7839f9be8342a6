"""Authentication and authorisation failures. No HTTP here: registry/errors.py maps them."""

from __future__ import annotations


class AuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(AuthError):
    """No usable credentials: the client should (re)authenticate for `scope`."""

    def __init__(self, message: str, scope: str | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.scope = scope
        self.error = error  # RFC 6750 error: "invalid_token" or "insufficient_scope"


class AccessDenied(AuthError):
    """Authenticated, but policy does not allow it."""


class TooManyAttempts(AuthError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
