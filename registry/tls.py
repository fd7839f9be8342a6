"""`[server.tls]`: the server's TLS context, renewed without a restart.

cert-manager and ACME clients replace the certificate and key files in place. `Tls` keeps the
context every new connection is handshaken with and builds a new one when the files change
(looked at every `reload_interval` seconds, and at once on SIGHUP); connections already open
keep the one they started with. A half-written pair (a new certificate beside the old key)
fails to load: the old context stays, a warning says why, and the next look tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

from registry.settings import TlsSettings

log = logging.getLogger("registry")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(Exception):
    """The files cannot make a TLS context (the message names the file and why)."""


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    assert settings.cert_file and settings.key_file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.set_alpn_protocols(["http/1.1"])
    for what, name in (("certificate", settings.cert_file), ("key", settings.key_file),
                       ("client CA file", settings.client_ca_file)):
        if name:
            _readable(what, name)
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError(f"TLS certificate {settings.cert_file} and key {settings.key_file} "
                       f"do not load: {_reason(exc)}") from None
    if settings.client_ca_file:
        try:
            context.load_verify_locations(cafile=settings.client_ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsError(f"TLS client CA file {settings.client_ca_file} does not load: "
                           f"{_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _readable(what: str, name: str) -> None:
    """The file can be read and holds what it should (OpenSSL's own errors say "PEM lib")."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        with open(name, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise TlsError(f"cannot read the TLS {what} {name} as uid {os.getuid()}: "
                       f"{exc.strerror or exc}") from None
    try:
        if what == "key":
            load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError):
        wanted = "an unencrypted PEM private key" if what == "key" else "PEM certificates"
        raise TlsError(f"the TLS {what} {name} does not hold {wanted}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Tls:
    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.context = build_context(settings)  # TlsError: the server does not start
        self._seen = self._fingerprint()
        self._timer: asyncio.TimerHandle | None = None
        self._failing: str | None = None

    def _files(self) -> list[str]:
        s = self.settings
        return [f for f in (s.cert_file, s.key_file, s.client_ca_file) if f]

    def _fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        marks = []
        for name in self._files():
            try:
                st = os.stat(name)
                marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                marks.append((0, 0, 0))
        return tuple(marks)

    def reload(self, reason: str = "SIGHUP") -> bool:
        """Build a new context from the files; True when it replaced the old one."""
        try:
            context = build_context(self.settings)
        except TlsError as exc:
            if self._failing != str(exc):
                log.warning("keeping the current TLS certificate (%s): %s", reason, exc)
            self._failing = str(exc)
            return False
        self.context = context
        self._failing = None
        log.info("TLS certificate reloaded (%s)", reason)
        return True

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP and when the files change; call from the running loop."""
        try:
            import signal

            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signals here: the file watch remains
        if self.settings.reload_interval > 0:
            self._timer = loop.call_later(self.settings.reload_interval, self._look, loop)

    def _on_sighup(self) -> None:
        self._seen = self._fingerprint()
        self.reload()

    def _look(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self._fingerprint()
        if now != self._seen or self._failing is not None:
            self._seen = now
            self.reload("the files changed")
        self._timer = loop.call_later(self.settings.reload_interval, self._look, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
