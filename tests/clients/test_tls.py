"""TLS served by the registry itself, trusted the way each client documents it.

The test makes its own CA (with `cryptography`) and a server certificate for 127.0.0.1.
skopeo trusts it through `--dest-cert-dir`/`--src-cert-dir`, podman through `--cert-dir`,
docker through `/etc/docker/certs.d/HOST:PORT/ca.crt` (on an engine of its own that, unlike the
session's, does not treat loopback as an insecure registry, so the certificate is checked).
Each client is also shown refusing the server without the CA, so a pass means the chain was
verified. Then mutual TLS, a certificate renewed on disk, and the minimum version.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import LiveRegistry, metric, start_registry
from tests.imagebuild import build_image, resolve

from .conftest import docker_required
from .dockerd import DockerDaemon, DockerUnavailable, start_docker, write_docker_archive

TIMEOUT = 300
KiB = 1024


# --------------------------------------------------------------------------- a CA of our own


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.cert.read_bytes()).serial_number


class Authority:
    """A CA that issues server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.ca_file = folder / f"{name}.crt"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, client: bool = False, addresses: Sequence[str] = ("127.0.0.1",),
              cert: Path | None = None, key: Path | None = None) -> Issued:
        """A leaf certificate and key (for `addresses` and localhost, or a client), written to
        `cert` and `key` (by default NAME.crt and NAME.key in the folder)."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False))
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses),
                x509.DNSName("localhost")]), critical=False)
        leaf = builder.sign(self.key, hashes.SHA256())
        cert = cert or self.folder / f"{name}.crt"
        key = key or self.folder / f"{name}.key"
        key.write_bytes(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        key.chmod(0o600)
        cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        return Issued(cert, key)


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    client_ca: Authority
    client: Issued
    stranger: Issued
    """A client certificate from a CA the server does not trust for clients."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder, "registry-test-ca")
    client_ca = Authority(folder, "registry-test-client-ca")
    return Pki(ca=ca, server=ca.issue("server"), client_ca=client_ca,
               client=client_ca.issue("client", client=True),
               stranger=ca.issue("stranger", client=True))


def tls_env(pki: Pki, **more: str) -> dict[str, str]:
    env = {"REGISTRY_SERVER_TLS_CERT_FILE": str(pki.server.cert),
           "REGISTRY_SERVER_TLS_KEY_FILE": str(pki.server.key)}
    return {**env, **{f"REGISTRY_SERVER_TLS_{k.upper()}": v for k, v in more.items()}}


@pytest.fixture(scope="module")
def tls_registry(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("tls") / "data", env=tls_env(pki),
                          ca_file=pki.ca.ca_file)
    yield live
    live.stop()
    assert "Traceback" not in live.log(), live.log()[-4000:]


def cert_dir(folder: Path, ca: Path, client: Issued | None = None) -> Path:
    """A directory in the layout of containers-certs.d(5): ca.crt, and client.cert/.key."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, folder / "ca.crt")
    if client is not None:
        shutil.copy(client.cert, folder / "client.cert")
        shutil.copy(client.key, folder / "client.key")
    return folder


def run(cmd: list[str], env: dict[str, str], *, check: bool = True,
        registry: LiveRegistry | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"timed out: {' '.join(cmd)}\n{exc.stderr!r}") from exc
    if check and proc.returncode != 0:
        tail = registry.log()[-3000:] if registry else ""
        raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\nstdout:\n{proc.stdout}"
                             f"\nstderr:\n{proc.stderr}\nregistry log:\n{tail}")
    return proc


def refused_for_trust(proc: subprocess.CompletedProcess[str]) -> bool:
    """The client stopped because it could not verify the server's certificate."""
    text = (proc.stdout + proc.stderr).lower()
    return proc.returncode != 0 and ("x509" in text or "certificate" in text)


def containers_env(home: Path) -> dict[str, str]:
    """skopeo and podman with their own registries.conf, auth file and temporary space."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "registries.conf").write_text("unqualified-search-registries = []\n")
    (home / "tmp").mkdir(exist_ok=True)
    (home / "auth.json").write_text('{"auths": {}}\n')  # podman insists that it exists
    return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(home / "auth.json"), "TMPDIR": str(home / "tmp"),
            "XDG_RUNTIME_DIR": str(home / "run")}


def served_digest(live: LiveRegistry, repository: str, tag: str) -> str:
    answer = httpx.head(f"{live.url}/v2/{repository}/manifests/{tag}", verify=live.verify,
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                 "application/vnd.docker.distribution.manifest.v2+json"})
    assert answer.status_code == 200, answer
    return answer.headers["docker-content-digest"]


# --------------------------------------------------------------------------- the three clients


def skopeo_or_skip() -> str:
    found = shutil.which("skopeo")
    if found is None:
        if docker_required():
            pytest.fail("skopeo is not on PATH", pytrace=False)
        pytest.skip("skopeo is not on PATH")
    return found


def test_skopeo_pushes_and_pulls_trusting_the_ca_by_cert_dir(
        tls_registry: LiveRegistry, pki: Pki, tmp_path: Path) -> None:
    skopeo = skopeo_or_skip()
    env = containers_env(tmp_path / "home")
    built = build_image(tmp_path / "layout", [256 * KiB, 64 * KiB], ref="v1")
    target = f"docker://{tls_registry.host}/tls/skopeo:v1"
    copy = [skopeo, "--insecure-policy", "copy", "--preserve-digests", "--retry-times", "0"]

    untrusted = run([*copy, "--dest-no-creds", f"oci:{built.layout}:v1", target], env,
                    check=False)
    assert refused_for_trust(untrusted), untrusted

    certs = cert_dir(tmp_path / "certs", pki.ca.ca_file)
    run([*copy, "--dest-no-creds", "--dest-cert-dir", str(certs), f"oci:{built.layout}:v1",
         target], env, registry=tls_registry)
    assert served_digest(tls_registry, "tls/skopeo", "v1") == built.manifest_digest
    pulled = tmp_path / "pulled"
    run([*copy, "--src-no-creds", "--src-cert-dir", str(certs), target, f"oci:{pulled}:v1"],
        env, registry=tls_registry)
    assert resolve(pulled, "v1")["digest"] == built.manifest_digest


def test_podman_pushes_and_pulls_trusting_the_ca_by_cert_dir(
        tls_registry: LiveRegistry, pki: Pki, tmp_path: Path) -> None:
    executable = shutil.which("podman")
    if executable is None:
        if os.environ.get("REQUIRE_PODMAN") == "1":
            pytest.fail("podman is not on PATH (REQUIRE_PODMAN=1)", pytrace=False)
        pytest.skip("podman is not on PATH (apt-get install -y podman)")
    env = containers_env(tmp_path / "home")
    store = Path(tempfile.mkdtemp(prefix="podman-", dir="/tmp"))  # runroot: < 50 characters
    podman = [executable, "--root", str(store / "root"), "--runroot", str(store / "run"),
              "--storage-driver", "vfs", "--events-backend", "file",
              "--cgroup-manager", "cgroupfs", "--tmpdir", str(store / "tmp")]
    built = build_image(tmp_path / "layout", [128 * KiB, 32 * KiB], ref="v1")
    ref = f"{tls_registry.host}/tls/podman:v1"
    try:
        image_id = run([*podman, "pull", "-q", f"oci:{built.layout}:v1"], env,
                       registry=tls_registry).stdout.split()[-1]
        run([*podman, "tag", image_id, ref], env)

        untrusted = run([*podman, "push", ref], env, check=False)
        assert refused_for_trust(untrusted), untrusted

        certs = cert_dir(tmp_path / "certs", pki.ca.ca_file)
        run([*podman, "push", "--cert-dir", str(certs), ref], env, registry=tls_registry)
        run([*podman, "rmi", "-f", image_id], env)
        run([*podman, "pull", "-q", "--cert-dir", str(certs), ref], env, registry=tls_registry)
        inspected = json.loads(run([*podman, "image", "inspect", ref], env).stdout)[0]
        assert inspected["Id"] == image_id.removeprefix("sha256:")
        assert inspected["Digest"] == served_digest(tls_registry, "tls/podman", "v1")
    finally:
        run([*podman, "system", "reset", "-f"], env, check=False)
        shutil.rmtree(store, ignore_errors=True)


# dockerd treats every loopback registry as insecure, always (127.0.0.0/8 and ::1 are on its
# insecure list whatever the configuration), and skips verifying their certificates. So the
# docker test serves on an address of the documentation range (RFC 5737) put on the loopback
# interface for the test: reachable from this machine only, and checked by docker like any
# registry's.
DOC_ADDRESS = "198.51.100.7"


@pytest.fixture(scope="module")
def docker_address() -> Iterator[str]:
    added = subprocess.run(["ip", "address", "add", f"{DOC_ADDRESS}/32", "dev", "lo"],
                           capture_output=True, text=True, check=False)
    if added.returncode != 0:
        message = f"cannot put {DOC_ADDRESS} on the loopback interface: {added.stderr.strip()}"
        if docker_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield DOC_ADDRESS
    finally:
        subprocess.run(["ip", "address", "del", f"{DOC_ADDRESS}/32", "dev", "lo"], check=False)


@pytest.fixture(scope="module")
def verifying_docker() -> Iterator[DockerDaemon]:
    """An engine of its own, with no insecure registries configured."""
    try:
        daemon = start_docker(insecure_registries=[])
    except DockerUnavailable as exc:
        if docker_required():
            pytest.fail(f"cannot start a Docker engine: {exc.summary}\n{exc.logs}",
                        pytrace=False)
        pytest.skip(f"DOCKER TESTS SKIPPED - no Docker engine: {exc.summary}")
    try:
        yield daemon
    finally:
        daemon.stop()


def test_docker_pushes_and_pulls_trusting_the_ca_in_certs_d(
        pki: Pki, docker_address: str, verifying_docker: DockerDaemon, tmp_path: Path) -> None:
    server = pki.ca.issue("docker-server", addresses=[docker_address])
    live = start_registry(tmp_path / "data", ca_file=pki.ca.ca_file, address=docker_address,
                          extra_args=["--allow-anonymous"], env={
                              "REGISTRY_SERVER_TLS_CERT_FILE": str(server.cert),
                              "REGISTRY_SERVER_TLS_KEY_FILE": str(server.key)})
    docker = verifying_docker
    docker.extra_logs["registry log"] = live.log_path
    ref = f"{live.host}/tls/docker:v1"
    archive = write_docker_archive(tmp_path / "image.tar", ref, [96 * KiB, 16 * KiB])
    docker.run("load", "-i", str(archive.path))
    trusted = Path("/etc/docker/certs.d") / live.host
    try:
        untrusted = docker.run("push", ref, check=False)
        assert untrusted.returncode != 0 and "certificate" in untrusted.output.lower(), \
            untrusted.describe()

        trusted.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki.ca.ca_file, trusted / "ca.crt")
        docker.run("push", ref)
        docker.run("rmi", "-f", ref)
        docker.run("pull", ref)
        assert docker.inspect_image(ref)["Id"] == archive.image_id
        digest = served_digest(live, "tls/docker", "v1")
        assert f"{live.host}/tls/docker@{digest}" in docker.inspect_image(ref)["RepoDigests"]
        assert "Traceback" not in live.log()
    finally:
        docker.run("rmi", "-f", ref, check=False)
        shutil.rmtree(trusted, ignore_errors=True)
        live.stop()


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(
        pki: Pki, tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", ca_file=pki.ca.ca_file,
                          client_cert=(pki.client.cert, pki.client.key),
                          env=tls_env(pki, client_ca_file=str(pki.client_ca.ca_file)))
    try:
        def client(cert: Issued | None) -> httpx.Client:
            context = ssl.create_default_context(cafile=pki.ca.ca_file)
            if cert is not None:
                context.load_cert_chain(cert.cert, cert.key)
            return httpx.Client(base_url=live.url, verify=context, timeout=10)

        for refused in (None, pki.stranger):
            with client(refused) as http, pytest.raises(httpx.TransportError):
                http.get("/v2/")
        with client(pki.client) as http:
            assert http.get("/v2/").status_code == 200

        skopeo = shutil.which("skopeo")
        if skopeo is not None:  # and a real client, which reads client.cert/client.key
            env = containers_env(tmp_path / "home")
            built = build_image(tmp_path / "layout", [64 * KiB], ref="v1")
            copy = [skopeo, "--insecure-policy", "copy", "--retry-times", "0",
                    "--dest-no-creds", "--dest-cert-dir"]
            target = f"docker://{live.host}/mtls/app:v1"
            without = run([*copy, str(cert_dir(tmp_path / "ca-only", pki.ca.ca_file)),
                           f"oci:{built.layout}:v1", target], env, check=False)
            assert without.returncode != 0
            run([*copy, str(cert_dir(tmp_path / "with-client", pki.ca.ca_file, pki.client)),
                 f"oci:{built.layout}:v1", target], env, registry=live)
            assert served_digest(live, "mtls/app", "v1") == built.manifest_digest

        with client(pki.client) as http:
            ended = metric(http.get("/metrics").text, "registry_connections_ended_total",
                           reason="tls_handshake")
        assert ended is not None and ended >= 2
        assert "Traceback" not in live.log()
    finally:
        live.stop()


# --------------------------------------------------------------------------- renewal, versions


def served_serial(live: LiveRegistry, ca: Path) -> int:
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_for_serial(live: LiveRegistry, ca: Path, serial: int, within: float) -> float:
    start = time.monotonic()
    while served_serial(live, ca) != serial:
        assert time.monotonic() - start < within, f"still the old certificate after {within} s"
        time.sleep(0.1)
    return time.monotonic() - start


def renew_in_place(pki: Pki, cert: Path, key: Path) -> Issued:
    """What an ACME client does: a new key and certificate over the old files' names (each
    written beside and renamed over, so a reader never sees half a file)."""
    fresh = pki.ca.issue("renewed", cert=cert.with_name(cert.name + ".new"),
                         key=key.with_name(key.name + ".new"))
    os.replace(fresh.key, key)
    os.replace(fresh.cert, cert)
    return Issued(cert, key)


def test_a_certificate_renewed_on_disk_is_served_to_the_next_connection(
        pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = pki.ca.issue("first", cert=cert, key=key)
    live = start_registry(tmp_path / "data", ca_file=pki.ca.ca_file, env={
        "REGISTRY_SERVER_TLS_CERT_FILE": str(cert), "REGISTRY_SERVER_TLS_KEY_FILE": str(key),
        "REGISTRY_SERVER_TLS_RELOAD_INTERVAL": "1"})
    try:
        assert served_serial(live, pki.ca.ca_file) == first.serial()
        with httpx.Client(base_url=live.url, verify=live.verify, timeout=10) as kept:
            assert kept.get("/v2/").status_code == 200
            renewed = renew_in_place(pki, cert, key)
            wait_for_serial(live, pki.ca.ca_file, renewed.serial(), within=5)
            assert kept.get("/v2/").status_code == 200  # an open connection goes on
        assert live.process.poll() is None
    finally:
        live.stop()


def test_sighup_reloads_the_certificate_at_once(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    pki.ca.issue("first", cert=cert, key=key)
    live = start_registry(tmp_path / "data", ca_file=pki.ca.ca_file, env={
        "REGISTRY_SERVER_TLS_CERT_FILE": str(cert), "REGISTRY_SERVER_TLS_KEY_FILE": str(key),
        "REGISTRY_SERVER_TLS_RELOAD_INTERVAL": "0"})  # no looking: only the signal
    try:
        renewed = renew_in_place(pki, cert, key)
        time.sleep(1.5)
        assert served_serial(live, pki.ca.ca_file) != renewed.serial()
        live.process.send_signal(signal.SIGHUP)
        wait_for_serial(live, pki.ca.ca_file, renewed.serial(), within=2)
        assert live.process.poll() is None  # SIGHUP is not a stop
        assert httpx.get(live.url + "/v2/", verify=live.verify).status_code == 200
    finally:
        live.stop()


def test_min_version_refuses_older_clients(pki: Pki, tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", ca_file=pki.ca.ca_file,
                          env=tls_env(pki, min_version="1.3"))
    try:
        def handshake(version: ssl.TLSVersion) -> str:
            context = ssl.create_default_context(cafile=pki.ca.ca_file)
            context.minimum_version = context.maximum_version = version
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return str(tls.version())

        with pytest.raises(ssl.SSLError):
            handshake(ssl.TLSVersion.TLSv1_2)
        assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    finally:
        live.stop()

    default = start_registry(tmp_path / "data2", ca_file=pki.ca.ca_file, env=tls_env(pki))
    try:  # by default TLS 1.2 is still served, 1.1 is not
        context = ssl.create_default_context(cafile=pki.ca.ca_file)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        assert httpx.get(default.url + "/v2/", verify=context).status_code == 200
    finally:
        default.stop()
