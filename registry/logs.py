"""The registry's logs: secrets redacted from every logger's lines, text or JSON lines.

`server.log_format = "json"` makes every line one JSON object, from every logger (ours,
uvicorn's, the libraries'): `time` (UTC, ISO 8601), `level`, `logger`, `message`, and for
a request-log line its fields (`request_id`, `status`, ...) beside them; a traceback is one
`exception` string. Written here rather than taken from python-json-logger: the whole
formatter is a dict and `json.dumps`, and the redaction it must run after is ours anyway.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from registry.settings import Settings


class StartupFailed(Exception):
    """Start-up failed and the reason has been logged in one line: nothing more to print."""


# Query and form parameters, `key=value` pairs and JSON members whose name says they hold a
# secret: our signed URLs' `signature`, S3's `X-Amz-Signature`/`-Credential`/`-Security-Token`,
# OAuth2's `access_token`/`refresh_token`/`password`, SigV4's `Credential=`/`Signature=`.
_SECRET_NAME = r"[\w.-]*(?:signature|token|password|passwd|secret|credential)[\w.-]*"
_REDACTIONS = [
    (re.compile(rf"(?i)(?<![\w.-])({_SECRET_NAME})(=|%3D)[^&\s\"',;]+"), r"\1\2REDACTED"),
    (re.compile(rf'(?i)("{_SECRET_NAME}"\s*:\s*)"[^"\\]*(?:\\.[^"\\]*)*"'), r'\1"REDACTED"'),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 REDACTED"),  # Authorization
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), "REDACTED"),  # any JWT (our tokens)
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), r"\1:REDACTED@"),  # a URL's password
]


def redact(text: str) -> str:
    """`text` with every signature, credential and token we can recognise replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """On a handler, so it sees every logger's records (uvicorn's access log prints whole
    query strings, a signed blob URL's signature among them): the message, the traceback and
    the stack, each redacted once and for every formatter after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken call: the handler reports it as logging always does
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, separators=(",", ":"), default=str)


class QuietStartupFailure(logging.Filter):
    """A failed start-up has been told in one line (`StartupFailed`); uvicorn then logs the
    traceback Starlette hands it and "Application startup failed. Exiting.": dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error" or record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not (StartupFailed.__name__ in message
                    or message.startswith("Application startup failed"))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    level = settings.server.log_level.upper()
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    formatter: logging.Formatter = (JsonLines() if settings.server.log_format == "json"
                                    else logging.Formatter(TEXT_FORMAT))
    for handler in logging.getLogger().handlers:  # what every logger propagates to
        handler.setFormatter(formatter)
        for kind in (RedactSecrets, QuietStartupFailure):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    # httpx (event delivery, pull-through upstreams) logs every request at INFO; botocore
    # says at INFO where it found credentials.
    for chatty in ("httpx", "botocore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # uvicorn says at INFO what our own start-up line and shutdown lines already say
    # ("Started server process", "Waiting for application startup", ...): its warnings and
    # errors still show; everything of it at debug level.
    uvicorn_level = logging.DEBUG if level in ("DEBUG", "TRACE") else logging.WARNING
    logging.getLogger("uvicorn.error").setLevel(uvicorn_level)
