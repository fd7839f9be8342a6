"""One frozen settings object, built from (in rising priority) defaults, a TOML file,
`REGISTRY_*` environment variables and CLI flags, validated with errors that name the bad key."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "REGISTRY_"
# `REGISTRY_*` names that are someone else's, skipped without a warning: the credential
# helpers' endpoint, and the variables Kubernetes sets in every pod for a Service named
# `registry` (REGISTRY_SERVICE_HOST, REGISTRY_PORT=tcp://..., REGISTRY_PORT_5000_TCP_ADDR, ...).
_FOREIGN_ENV = re.compile(r"REGISTRY_(ENDPOINT_URL|SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT"
                          r"(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)")

log = logging.getLogger("registry")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """HTTPS on the registry's port: on when cert_file and key_file are both set."""

    cert_file: str | None = None  # PEM: the server certificate, then its intermediates
    key_file: str | None = field(default=None, repr=False)  # PEM private key of cert_file
    # PEM CA certificates: set, a client must present a certificate signed by one of them
    # (mutual TLS), or the handshake fails.
    client_ca_file: str | None = None
    min_version: str = "1.2"  # the oldest TLS version a client may use: "1.2" or "1.3"
    # Seconds between looks at the files' modification times; a changed certificate (renewed
    # in place by cert-manager or an ACME client) is served to the next connection. SIGHUP
    # reloads at once. 0: SIGHUP only.
    reload_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    # Address to listen on (`--host`); beyond loopback, auth must be enabled or anonymous access
    # allowed explicitly.
    host: str = "127.0.0.1"
    port: int = 5000  # TCP port to listen on (`--port`)
    # The URL clients reach the registry by, when behind a proxy or load balancer: the token
    # realm, ECR repository URIs, proxyEndpoint and layer download URLs, and event envelopes
    # use it. Unset: each request's own URL.
    public_url: str | None = None
    log_level: str = "info"  # the root logger's level: debug, info, warning, error or critical
    access_log: bool = False  # uvicorn's access log, in its own format (request_log is richer)
    # Seconds in-flight requests get to finish once the server stops accepting (SIGTERM,
    # after drain_delay).
    graceful_timeout: int = 30
    # Processes answering requests on the one port (1: the server process itself; more: a
    # supervisor forks them and restarts any that dies).
    workers: int = 1
    # glibc only: fewer fresh mmap'd pages per request-body chunk (1.6x upload throughput) and
    # two malloc arenas instead of eight per core; MALLOC_* environment variables win.
    tune_malloc: bool = True
    request_log: bool = False  # one line per request (id, identity, route, status, bytes, ms)
    log_format: str = "text"  # or "json": every log line, the request log's too, as JSON
    read_only: bool = False  # maintenance: writes answer 405 UNSUPPORTED
    # SIGTERM first turns /readyz false and keeps serving this many seconds (so a load
    # balancer stops sending), then stops accepting and lets requests finish.
    drain_delay: int = 0
    # Prometheus metrics on a port of their own (0: at /metrics on the registry's port).
    metrics_port: int = 0
    metrics_host: str = ""  # the address metrics_port listens on; empty: `host`
    metrics_refresh: float = 15.0  # seconds between counts of the event/replication queues
    # Addresses or CIDRs of the proxies and load balancers in front of the registry: only their
    # X-Forwarded-For names the client (for logs, rate limits, the login throttle, policies'
    # aws:SourceIp). Empty: nobody's is believed, so no client can choose its own address.
    trusted_proxies: tuple[str, ...] = ()
    # Certificate files, watched for renewals, and mutual TLS.
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Bounds on every connection, so slow or idle clients cannot hold the server's sockets.
    # Seconds a client has to send a request's headers (a TLS handshake included).
    header_timeout: float = 10.0
    idle_timeout: float = 75.0  # seconds a kept-alive connection may sit idle between requests
    # Seconds a request body may stop arriving before the connection is ended (a stalled
    # upload keeps the bytes that came, for the client to resume).
    body_timeout: float = 60.0
    # Open connections per process; more get 503 and are closed at once. 0: no cap. The
    # process raises its open-file limit to the hard limit at start, and max_connections is
    # kept below it.
    max_connections: int = 10000
    # Open connections per client address (the TCP peer: trusted proxies are not capped); more
    # get 503 and are closed at once. 0: no cap.
    max_connections_per_address: int = 256


@dataclass(frozen=True, slots=True)
class FilesystemSettings:
    root: str = "./data"  # the directory holding everything (`--data-dir`)
    # fsync every committed object before it becomes visible; off is faster, but a power loss
    # can then lose or truncate what was just written.
    fsync: bool = True
    # Threads for small calls (stat, records, renames; raise it on NFS); blob data uses
    # storage.max_threads.
    metadata_threads: int = 4
    # Answer small reads (tag links, records, a blob's size) on the event loop when the kernel
    # says they cannot block (the file is in memory; Linux 5.12+, local filesystems only), else
    # on the threads. Exact either way: nothing is cached. Off: every read takes a thread.
    loop_reads: bool = True


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str = ""  # the bucket holding everything; required with driver "s3"
    prefix: str = ""  # key prefix inside the bucket, to share it with other data
    # The bucket's region; unset: AWS_REGION / AWS_DEFAULT_REGION / the AWS config file.
    region: str | None = None
    # Only for S3-compatible stores (MinIO, Ceph RGW); unset: AWS's endpoint for the region.
    endpoint_url: str | None = None
    # "auto", "path" or "virtual"; "path" for MinIO / Ceph RGW without wildcard DNS.
    addressing_style: str = "auto"
    # Bytes per multipart upload part, at least 5 MiB (S3's minimum), doubling every 1000
    # parts (5 TiB blobs fit); an upload holds at most two parts in memory.
    part_size: int = 8 * 1024 * 1024
    # Blob GETs (without Range) answer 307 to a presigned URL, so layer bytes flow from S3 to
    # the client; false: blobs stream through the registry (clients that cannot reach S3).
    redirect: bool = True
    # Seconds a presigned URL stays valid, at most (temporary credentials may end it sooner).
    redirect_expiry: int = 1200
    # "AES256" or "aws:kms" (then kms_key_id); unset: the bucket's default encryption.
    server_side_encryption: str | None = None
    kms_key_id: str | None = None  # the KMS key with "aws:kms"; unset: S3's default key
    # Of every object (blobs, manifests, records alike), e.g. "STANDARD_IA"; unset: STANDARD.
    storage_class: str | None = None
    # With secret_access_key; unset (best in production): the standard AWS credential chain.
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # access_key_id's secret
    # With access_key_id and secret_access_key, when those are temporary credentials.
    session_token: str | None = field(default=None, repr=False)
    max_attempts: int = 6  # attempts per S3 request (botocore's standard retry mode, back-off)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    driver: str = "filesystem"  # "filesystem" ([storage.filesystem]) or "s3" ([storage.s3])
    # False: deleting manifests and tags is refused (the v2 API's DELETE, BatchDeleteImage).
    delete_enabled: bool = True
    # The driver's bounded threads for blocking I/O (filesystem: blob data; S3: boto3 calls in
    # flight, and the size of its connection pool).
    max_threads: int = 32
    # For driver "filesystem": one directory, which replicas may share.
    filesystem: FilesystemSettings = field(default_factory=FilesystemSettings)
    s3: S3Settings = field(default_factory=S3Settings)  # for driver "s3": one bucket


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # Require credentials (tokens, Basic, SigV4) and authorise every request by the IAM
    # policies; needs secret_key.
    enabled: bool = False
    # Serving anonymously on a non-loopback address needs this said explicitly
    # (`--allow-anonymous`).
    allow_anonymous: bool = False
    account_id: str = "000000000000"  # the 12-digit registry id (ECR registryId)
    region: str = "us-east-1"  # the region of ARNs, and the one SigV4 signatures must name
    service: str = "registry"  # the token audience clients name in `service=`
    issuer: str = "registry-token-issuer"  # the tokens' `iss` claim
    # The token endpoint URL clients are sent to; unset: public_url (else the request's URL)
    # followed by /token.
    realm: str | None = None
    token_ttl: int = 300  # seconds an access token from /token lives (at least 10)
    # Seconds a refresh token (docker's identitytoken) lives, at least token_ttl.
    refresh_token_ttl: int = 7 * 24 * 3600
    signing_algorithm: str = "ES256"  # of the tokens' signatures: ES256 or RS256
    # base64 of 32 bytes: encrypts access-key secrets and signing keys at rest; every replica
    # needs the same one.
    secret_key: str | None = field(default=None, repr=False)
    # Failed logins per (user, source address) within login_window, then 429 for that pair. A
    # right password from an address that has not been failing is never refused for someone
    # else's failures.
    login_failures: int = 5
    # Failed logins per source address, for all users together, then 429 for the address.
    login_address_failures: int = 50
    # Seconds in which failures count; a throttled pair then gets one more try every
    # login_window / login_failures seconds.
    login_window: int = 300


@dataclass(frozen=True, slots=True)
class RepositoriesSettings:
    # ECR's rule is that a repository exists before anything is pushed to it. True lets any
    # push create its repository with default settings (as a ROOT creation template applied
    # for CREATE_ON_PUSH would); stored templates are consulted either way.
    create_on_push: bool = False
    # Seconds this process may answer from memory what a tag points at, that a manifest read
    # by digest still exists, and that a blob is in the repository (with its size), instead of
    # reading storage on every pull (on S3 or NFS that read is most of a pull's cost; on a
    # local filesystem it is usually answered from memory anyway). Changes made through
    # this process are seen at once; a tag moved, or a manifest or blob deleted, through
    # another replica or worker is seen within this long. 0: every pull reads storage.
    tag_cache_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    # Seconds between runs of every repository's lifecycle policy (one replica runs them,
    # holding a lease in storage); 0 turns the schedule off (`registry lifecycle run` remains).
    interval: int = 3600


@dataclass(frozen=True, slots=True)
class GcSettings:
    # Seconds between garbage collections (one replica runs each, holding a lease); 0: never
    # on a schedule (`registry gc` remains).
    interval: int = 86400
    grace: int = 3600  # seconds: nothing written more recently is collected
    upload_max_age: int = 86400  # seconds: upload sessions older than this are purged
    delete_untagged: bool = True  # untagged manifests nothing holds on to are garbage
    keep_referrers: bool = True  # referrers (signatures, SBOMs) live as long as their subject


@dataclass(frozen=True, slots=True)
class EventEndpoint:
    # Required and unique: letters, digits, ._-; names the queue (`registry events list NAME`).
    name: str = ""
    url: str = ""  # the http(s) URL events are POSTed to
    # "eventbridge" (EventBridge's ECR Image Action) or "distribution" (Distribution's
    # notification envelope).
    format: str = "eventbridge"
    # Sent with every delivery, e.g. {Authorization = "Bearer ..."}; may carry secrets.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 5.0  # seconds per network operation (connect, a read, a write)
    repositories: tuple[str, ...] = ()  # wildcard patterns (`team/*`); empty: every one
    actions: tuple[str, ...] = ()  # PUSH, DELETE; empty: both
    max_attempts: int = 10  # deliveries tried, then the event goes to the dead-letter list
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_backoff: float = 300.0  # the longest wait between retries, in seconds


@dataclass(frozen=True, slots=True)
class EventsSettings:
    # Where events go. TOML: [[events.endpoints]] tables; environment:
    # REGISTRY_EVENTS_ENDPOINTS as a JSON list.
    endpoints: tuple[EventEndpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicationDestination:
    """Another registry images are copied to, standing in for ECR's (region, registryId)
    destination: PutReplicationConfiguration names it by those two."""

    # Required and unique: letters, digits, ._-; its queue is `replicate.NAME`.
    name: str = ""
    region: str = ""  # the region replication rules name it by: 2 to 25 of [0-9a-z-]
    registry_id: str = ""  # the registryId replication rules name it by: 12 digits
    url: str = ""  # the destination registry's base URL (its /v2/ API)
    username: str | None = None  # Basic credentials, also for its token endpoint
    password: str | None = field(default=None, repr=False)  # username's password
    timeout: float = 60.0  # seconds per network operation (connect, a read, a write)
    max_attempts: int = 10  # deliveries tried, then the job is dead-lettered: status FAILED
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_backoff: float = 300.0  # the longest wait between retries, in seconds


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    # The registries replication rules may name. TOML: [[replication.destinations]] tables;
    # environment: REGISTRY_REPLICATION_DESTINATIONS as a JSON list.
    destinations: tuple[ReplicationDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    enabled: bool = False  # rate limits per identity (or address) and API class, per replica
    scale: float = 1.0  # multiplies ECR's published rates (the defaults)
    burst_seconds: float = 2.0  # a bucket holds this many seconds' worth of requests
    # Requests per second for some classes, instead of ECR's rates (and not scaled): e.g.
    # {PutImage = 50}.
    rates: dict[str, float] = field(default_factory=dict)
    max_concurrent_uploads: int = 0  # upload requests in flight per replica; 0: no cap


@dataclass(frozen=True, slots=True)
class PullThroughSettings:
    tag_ttl: int = 86400  # seconds a cached tag is served before the upstream is asked again


@dataclass(frozen=True, slots=True)
class Settings:
    # The HTTP(S) listener: address, processes, logging, metrics, bounds on connections.
    server: ServerSettings = field(default_factory=ServerSettings)
    # Where blobs, manifests and every record live: a directory or an S3 bucket.
    storage: StorageSettings = field(default_factory=StorageSettings)
    # Authentication (Docker tokens, Basic, SigV4) and IAM-style policies.
    auth: AuthSettings = field(default_factory=AuthSettings)
    # How repositories come to exist.
    repositories: RepositoriesSettings = field(default_factory=RepositoriesSettings)
    # The schedule of lifecycle policy runs.
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    # Garbage collection: its schedule, and what counts as garbage.
    gc: GcSettings = field(default_factory=GcSettings)
    # Endpoints that push and delete events are delivered to.
    events: EventsSettings = field(default_factory=EventsSettings)
    # Pull-through cache repositories.
    pull_through: PullThroughSettings = field(default_factory=PullThroughSettings)
    # Rate limits per identity and API class, and the cap on uploads in flight.
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    # The registries replication rules copy images to.
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """`overrides` uses dotted keys, e.g. {"server.port": 5001} (CLI flags)."""
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            keys = _env_path(Settings, name[len(ENV_PREFIX):].lower().split("_"))
            if keys is None:
                if not _FOREIGN_ENV.fullmatch(name):
                    log.warning("ignoring environment variable %s: no such setting", name)
            else:
                _set(data, keys, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(data, dotted.split("."), value)
    settings: Settings = _build(Settings, data, "")
    return settings


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for depth, key in enumerate(keys[:-1]):
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise SettingsError(f"[{'.'.join(keys[:depth + 1])}] must be a table")
    data[keys[-1]] = value


def _env_path(cls: type, tokens: list[str]) -> list[str] | None:
    """Map `storage_filesystem_root` onto ["storage", "filesystem", "root"], allowing keys that
    themselves contain `_` (`delete_enabled`)."""
    hints = typing.get_type_hints(cls)
    for i in range(len(tokens), 0, -1):
        name = "_".join(tokens[:i])
        if name not in hints:
            continue
        if i == len(tokens):
            return [name]
        if dataclasses.is_dataclass(hints[name]):
            rest = _env_path(hints[name], tokens[i:])
            if rest is not None:
                return [name, *rest]
    return None


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        place = f"[{where}]" if where else "top level"
        raise SettingsError(f"unknown setting {unknown[0]!r} in {place}")
    values: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        key = f"{where}.{name}" if where else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(typing.cast(type, hint), data[name], key)
        elif typing.get_origin(hint) is tuple and dataclasses.is_dataclass(
                typing.get_args(hint)[0]):
            item = typing.cast(type, typing.get_args(hint)[0])
            values[name] = tuple(_build(item, entry, f"{key}[{i}]")
                                 for i, entry in enumerate(_json_list(data[name], key)))
        else:
            values[name] = _coerce(hint, data[name], key)
    settings = cls(**values)
    _validate(settings, where)
    return settings


def _json_list(value: Any, key: str) -> list[Any]:
    """A list of tables: from TOML as is, from the environment as a JSON list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SettingsError(f"setting {key!r} must be a JSON list of tables") from None
    if not isinstance(value, list):
        raise SettingsError(f"setting {key!r} must be a list of tables")
    return value


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is dict:
        if isinstance(value, str):  # from the environment: JSON
            try:
                value = json.loads(value)
            except ValueError:
                raise SettingsError(f"setting {key!r} must be a JSON object") from None
        item = typing.get_args(hint)[1]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
        raise SettingsError(f"setting {key!r} must be a table")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise SettingsError(f"setting {key!r} must be a list of strings")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise SettingsError(f"setting {key!r} must be a number, got {value!r}")
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    target = next((a for a in args if a is not type(None)), hint) if optional else hint
    if optional and (value is None or value == ""):
        return None
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif target is str and isinstance(value, str | Path):
        return str(value)
    raise SettingsError(f"setting {key!r} must be {target.__name__}, got {value!r}")


def _check_retries(settings: EventEndpoint | ReplicationDestination, where: str) -> None:
    """An event endpoint's or a replication destination's delivery attempts and delays."""
    if settings.max_attempts < 1 or settings.timeout <= 0 or settings.backoff <= 0 \
            or settings.max_backoff < settings.backoff:
        raise SettingsError(f"settings '{where}': max_attempts, timeout and backoff must be "
                            "positive, and max_backoff at least backoff")


def _validate(settings: Any, where: str) -> None:
    if isinstance(settings, ServerSettings):
        if not 0 <= settings.port <= 65535:
            raise SettingsError(f"setting 'server.port' out of range: {settings.port}")
        if settings.public_url and not settings.public_url.startswith(("http://", "https://")):
            raise SettingsError("setting 'server.public_url' must start with http:// or https://")
        if not 1 <= settings.workers <= 256:
            raise SettingsError(
                f"setting 'server.workers' must be 1 to 256, got {settings.workers}")
        if settings.log_format not in ("text", "json"):
            raise SettingsError("setting 'server.log_format' must be text or json")
        if not 0 <= settings.metrics_port <= 65535:
            raise SettingsError(f"setting 'server.metrics_port' out of range: "
                                f"{settings.metrics_port}")
        if settings.metrics_port and settings.metrics_port == settings.port:
            raise SettingsError("setting 'server.metrics_port' must differ from 'server.port'")
        if min(settings.header_timeout, settings.idle_timeout, settings.body_timeout) <= 0:
            raise SettingsError("settings 'server.header_timeout', 'server.idle_timeout' and "
                                "'server.body_timeout' must be positive")
        if min(settings.max_connections, settings.max_connections_per_address) < 0:
            raise SettingsError("settings 'server.max_connections' and "
                                "'server.max_connections_per_address' must not be negative")
        for proxy in settings.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(f"setting 'server.trusted_proxies': {proxy[:64]!r} is not "
                                    "an IP address or CIDR") from None
    if isinstance(settings, TlsSettings):
        if bool(settings.cert_file) != bool(settings.key_file):
            raise SettingsError("settings 'server.tls.cert_file' and 'server.tls.key_file' go "
                                "together")
        if settings.client_ca_file and not settings.cert_file:
            raise SettingsError("setting 'server.tls.client_ca_file' needs "
                                "'server.tls.cert_file' and 'key_file'")
        if settings.min_version not in ("1.2", "1.3"):
            raise SettingsError("setting 'server.tls.min_version' must be 1.2 or 1.3")
        if settings.reload_interval < 0:
            raise SettingsError("setting 'server.tls.reload_interval' must not be negative")
    if isinstance(settings, RepositoriesSettings) and not 0 <= settings.tag_cache_seconds <= 60:
        raise SettingsError("setting 'repositories.tag_cache_seconds' must be from 0 to 60")
    if isinstance(settings, StorageSettings):
        from storage.drivers import DRIVERS

        if settings.driver not in DRIVERS:
            raise SettingsError(
                f"setting 'storage.driver' must be one of {sorted(DRIVERS)}, "
                f"got {settings.driver!r}"
            )
        if settings.max_threads < 1:
            raise SettingsError("setting 'storage.max_threads' must be at least 1")
        if settings.filesystem.metadata_threads < 1:
            raise SettingsError("setting 'storage.filesystem.metadata_threads' must be at least 1")
        if settings.driver == "s3" and not settings.s3.bucket:
            raise SettingsError("setting 'storage.s3.bucket' is required with driver 's3'")
    if isinstance(settings, AuthSettings):
        if not (len(settings.account_id) == 12 and settings.account_id.isdigit()):
            raise SettingsError("setting 'auth.account_id' must be 12 digits")
        if settings.signing_algorithm not in ("ES256", "RS256"):
            raise SettingsError("setting 'auth.signing_algorithm' must be ES256 or RS256")
        if settings.token_ttl < 10 or settings.refresh_token_ttl < settings.token_ttl:
            raise SettingsError("setting 'auth.token_ttl' must be at least 10 s and not above "
                                "'auth.refresh_token_ttl'")
        if min(settings.login_failures, settings.login_address_failures,
               settings.login_window) < 1:
            raise SettingsError("settings 'auth.login_failures', 'auth.login_address_failures' "
                                "and 'auth.login_window' must be at least 1")
        if settings.enabled and not settings.secret_key:
            raise SettingsError(
                "setting 'auth.secret_key' is required with auth enabled: it encrypts secrets "
                "at rest. Generate one with: python -c \"import base64,os;"
                "print(base64.b64encode(os.urandom(32)).decode())\"")
    if isinstance(settings, EventEndpoint):
        if not settings.name or not all(c.isalnum() or c in "._-" for c in settings.name):
            raise SettingsError(f"setting '{where}.name' is required: letters, digits, ._-")
        if not settings.url.startswith(("http://", "https://")):
            raise SettingsError(f"setting '{where}.url' must be an http(s) URL")
        if settings.format not in ("eventbridge", "distribution"):
            raise SettingsError(f"setting '{where}.format' must be eventbridge or distribution")
        if any(a not in ("PUSH", "DELETE") for a in settings.actions):
            raise SettingsError(f"setting '{where}.actions' may hold PUSH and DELETE")
        _check_retries(settings, where)
    if isinstance(settings, EventsSettings):
        names = [e.name for e in settings.endpoints]
        if len(set(names)) != len(names):
            raise SettingsError("setting 'events.endpoints': names must be unique")
    if isinstance(settings, ReplicationDestination):
        _validate_destination(settings, where)
    if isinstance(settings, ReplicationSettings):
        names = [d.name for d in settings.destinations]
        if len(set(names)) != len(names):
            raise SettingsError("setting 'replication.destinations': names must be unique")
        places = [(d.region, d.registry_id) for d in settings.destinations]
        if len(set(places)) != len(places):
            raise SettingsError("setting 'replication.destinations': each (region, "
                                "registry_id) may be named once")
    if isinstance(settings, S3Settings):
        if settings.part_size < 5 * 1024 * 1024:
            raise SettingsError(
                "setting 'storage.s3.part_size' must be at least 5 MiB (S3's minimum)")
        if settings.addressing_style not in ("auto", "path", "virtual"):
            raise SettingsError(
                "setting 'storage.s3.addressing_style' must be auto, path or virtual")
        if settings.server_side_encryption not in (None, "AES256", "aws:kms"):
            raise SettingsError(
                "setting 'storage.s3.server_side_encryption' must be AES256 or aws:kms")
        if bool(settings.access_key_id) != bool(settings.secret_access_key):
            raise SettingsError("settings 'storage.s3.access_key_id' and 'secret_access_key' "
                                "go together")


def _validate_destination(settings: ReplicationDestination, where: str) -> None:
    if not settings.name or not all(c.isalnum() or c in "._-" for c in settings.name):
        raise SettingsError(f"setting '{where}.name' is required: letters, digits, ._-")
    if not (2 <= len(settings.region) <= 25
            and all(c.isdigit() or c.islower() or c == "-" for c in settings.region)
            and settings.region.isascii()):
        raise SettingsError(f"setting '{where}.region' must be 2 to 25 of [0-9a-z-]")
    if not (len(settings.registry_id) == 12 and settings.registry_id.isdigit()
            and settings.registry_id.isascii()):
        raise SettingsError(f"setting '{where}.registry_id' must be 12 digits")
    if not settings.url.startswith(("http://", "https://")):
        raise SettingsError(f"setting '{where}.url' must be an http(s) URL")
    if bool(settings.username) != bool(settings.password):
        raise SettingsError(f"settings '{where}.username' and 'password' go together")
    _check_retries(settings, where)
