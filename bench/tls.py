#!/usr/bin/env python3
"""Blob push and pull throughput over TLS against plain HTTP, in the same run.

Makes a CA and a server certificate for 127.0.0.1 (EC P-256, or RSA 2048 with
``--key-type rsa``), writes one random ``--size`` blob, then in each of ``--rounds`` rounds
starts a fresh ``registry serve`` (filesystem storage, empty data dir) over plain HTTP and
one over TLS (``REGISTRY_SERVER_TLS_CERT_FILE`` / ``_KEY_FILE``), in alternating order, and
with curl on each: pushes the blob (POST, then one ``curl -T`` PUT ``?digest=``) and pulls it
(``curl -o /dev/null``). MB/s come from curl's ``time_total`` of the PUT or GET; the server's
and curl's CPU seconds per GiB say where TLS costs. The TLS version and cipher negotiated are
recorded, as Python's ssl and as curl saw them.

Usage (see bench/README.md):

    python bench/tls.py                          # 1 GiB, 3 rounds, EC P-256
    python bench/tls.py --size 256M --rounds 1 --key-type rsa --workers 2

Needs Linux (/proc), curl and ``cryptography`` (a dependency of the registry). Servers,
machine info and the JSON report come from bench/common.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import ipaddress
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    CURL,
    MB,
    REPO_ROOT,
    RESULTS_DIR,
    Blob,
    GiB,
    MiB,
    Server,
    cpu_seconds,
    fmt_size,
    git_commit,
    log,
    machine_info,
    make_blob,
    parse_size,
    process_tree,
    run_guarded,
    run_quiet,
    verify_pull,
    write_report,
)

PLAIN, TLS = "plain", "tls"
OPS = ("push", "pull")
WRITE_OUT = "%{http_code} %{time_total} %{size_upload} %{size_download}"
# As common.DEFAULT_OURS_CMD: pushes create their repository, no scheduled GC or lifecycle run.
SERVER_ENV = ["REGISTRY_REPOSITORIES_CREATE_ON_PUSH=true", "REGISTRY_GC_INTERVAL=0",
              "REGISTRY_LIFECYCLE_INTERVAL=0"]
KEY_TYPES = {"ec": "EC P-256 (ECDSA, SHA-256)", "rsa": "RSA 2048 (SHA-256)"}


@dataclass(frozen=True, slots=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path, key_type: str) -> Pki:
    """A CA and a server certificate for IP 127.0.0.1 signed by it, both of key_type."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def new_key() -> Any:
        if key_type == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                             key_encipherment=not ca and key_type == "rsa",
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                             crl_sign=ca, encipher_only=False, decipher_only=False)

    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    ca_key, key = new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench/tls.py CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(ca=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return pki


def launch(scheme: str, workdir: Path, workers: int, pki: Pki) -> Server:
    """A fresh `registry serve` on a free loopback port, with an empty data dir in workdir."""
    (data_dir := workdir / "data").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = list(SERVER_ENV)
    if scheme == TLS:
        env += [f"REGISTRY_SERVER_TLS_CERT_FILE={pki.cert_file}",
                f"REGISTRY_SERVER_TLS_KEY_FILE={pki.key_file}"]
    cmd = ["env", *env, sys.executable, "-m", "registry", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers)]
    log_path = workdir / "server.log"
    server = Server(scheme, cmd, port, data_dir, log_path,
                    ca_file=pki.ca_file if scheme == TLS else None)
    server.start()
    return server


def request(server: Server, method: str, path: str,
            timeout: float = 60) -> tuple[int, http.client.HTTPMessage]:
    conn = server.connection(timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.headers
    finally:
        conn.close()


def negotiated(server: Server) -> dict[str, Any]:
    """The TLS version and cipher Python's ssl gets from the server, and those curl got."""
    if (context := server.ssl_context()) is None:
        raise ValueError(f"{server.name} is not a TLS server")
    with (socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname="127.0.0.1") as conn):
        cipher = conn.cipher()
        python = {"version": conn.version(), "cipher": cipher[0] if cipher else None,
                  "bits": cipher[2] if cipher else None, "openssl": ssl.OPENSSL_VERSION}
    done = subprocess.run([*CURL, "-v", *server.curl_args, "-o", "/dev/null",
                           f"{server.base_url}/v2/"], capture_output=True, text=True, check=False)
    m = re.search(r"SSL connection using (\S+) / (\S+)", done.stderr)
    curl = {"version": m.group(1), "cipher": m.group(2)} if m else {"stderr": done.stderr[-500:]}
    return {"python_ssl": python, "curl": curl}


def run_curl(server: Server, args: list[str], what: str) -> tuple[str, float, int, int]:
    """curl with WRITE_OUT: (http code, time_total, bytes uploaded, bytes downloaded)."""
    done = subprocess.run([*CURL, *server.curl_args, "-w", WRITE_OUT, *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{server.name} {what}: curl rc={done.returncode}: {done.stderr}")
    code, total, up, down = done.stdout.split()[-4:]
    return code, float(total), int(float(up)), int(float(down))


def push(server: Server, repo: str, blob: Blob) -> float:
    """POST /blobs/uploads/, then `curl -T` PUT ?digest=; curl's time_total of the PUT."""
    status, headers = request(server, "POST", f"/v2/{repo}/blobs/uploads/")
    if status != 202 or not (location := headers.get("Location")):
        raise RuntimeError(f"{server.name}: POST uploads -> {status}")
    url = server.base_url + location if location.startswith("/") else location
    url += ("&" if "?" in url else "?") + f"digest={blob.digest}"
    code, total, up, _ = run_curl(server, [
        "-X", "PUT", "-T", str(blob.path), "-o", "/dev/null",
        "-H", "Content-Type: application/octet-stream",
        "-H", "Expect:",  # no 100-continue round trip, as in blob_throughput.py
        url], "PUT")
    if code != "201" or up != blob.size:
        raise RuntimeError(f"{server.name}: PUT -> {code}, {up} of {blob.size} bytes sent")
    status, headers = request(server, "HEAD", f"/v2/{repo}/blobs/{blob.digest}")
    if status != 200 or headers.get("Content-Length") != str(blob.size):
        raise RuntimeError(f"{server.name}: HEAD blob -> {status}, {headers.get('Content-Length')}")
    return total


def pull(server: Server, repo: str, blob: Blob) -> float:
    """`curl -o /dev/null` GET /v2/<repo>/blobs/<digest>; curl's time_total."""
    code, total, _, down = run_curl(
        server, ["-o", "/dev/null", f"{server.base_url}/v2/{repo}/blobs/{blob.digest}"], "GET")
    if code != "200" or down != blob.size:
        raise RuntimeError(f"{server.name}: GET blob -> {code}, {down} of {blob.size} bytes")
    return total


def children_cpu_seconds() -> float:
    """CPU of this process's exited children: curl (the servers are still running)."""
    return sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])


def measure(server: Server, op: str, repo: str, blob: Blob) -> dict[str, Any]:
    cpu0, curl0 = cpu_seconds(process_tree(server.pid)), children_cpu_seconds()
    t0 = time.perf_counter()
    seconds = (push if op == "push" else pull)(server, repo, blob)
    wall = time.perf_counter() - t0
    server_cpu = cpu_seconds(process_tree(server.pid)) - cpu0
    curl_cpu = children_cpu_seconds() - curl0
    gib = blob.size / GiB
    return {"scheme": server.name, "op": op, "seconds": seconds, "wall_seconds": wall,
            "mb_per_s": blob.size / MB / seconds, "mib_per_s": blob.size / MiB / seconds,
            "cpu_s_per_gib": server_cpu / gib, "client_cpu_s_per_gib": curl_cpu / gib}


def run_rounds(args: argparse.Namespace, base: Path, result: dict[str, Any]) -> None:
    """Fill result (in place, so an interrupted run keeps what it measured)."""
    pki = make_pki(base, args.key_type)
    t = time.perf_counter()
    log(f"creating {fmt_size(args.size)} random blob in {base} ...")
    blob = make_blob(base, args.size)
    log(f"  {blob.digest} ({time.perf_counter() - t:.1f}s)")
    samples: list[dict[str, Any]] = []
    result.update(blob={"size": blob.size, "digest": blob.digest}, samples=samples)
    for rnd in range(1, args.rounds + 1):
        for scheme in (PLAIN, TLS) if rnd % 2 else (TLS, PLAIN):
            # A fresh server and data dir per push: the blob is never already stored.
            workdir = base / f"{scheme}-r{rnd}"
            server = launch(scheme, workdir, args.workers, pki)
            try:
                if scheme == TLS and "negotiated" not in result:
                    result["negotiated"] = negotiated(server)
                    log(f"negotiated: {result['negotiated']}")
                repo = f"bench/tls-{scheme}-r{rnd}-{os.urandom(3).hex()}"
                for op in OPS:
                    sample = measure(server, op, repo, blob)
                    samples.append({**sample, "round": rnd, "repo": repo})
                    log(f"[round {rnd}/{args.rounds}] {scheme:<5} {op:<4} "
                        f"{sample['mb_per_s']:8.1f} MB/s {sample['mib_per_s']:8.1f} MiB/s  "
                        f"server {sample['cpu_s_per_gib']:5.2f}  curl "
                        f"{sample['client_cpu_s_per_gib']:5.2f} CPU s/GiB  "
                        f"({sample['seconds']:.2f}s)")
                    if op == "push" and rnd == 1:
                        verify_pull(server, repo, blob)
                    os.sync()  # this op's dirty pages are not written back during the next
            finally:
                server.stop()
            shutil.rmtree(server.data_dir, ignore_errors=True)  # the log stays for --keep-tmp
            os.sync()


METRICS = ("mb_per_s", "mib_per_s", "cpu_s_per_gib", "client_cpu_s_per_gib")


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for op in OPS:
        per_op: dict[str, Any] = {}
        for scheme in (PLAIN, TLS):
            rows = [s for s in samples if s["op"] == op and s["scheme"] == scheme]
            if rows:
                per_op[scheme] = {"n": len(rows)}
                for m in (*METRICS, "seconds"):
                    values = [r[m] for r in rows]
                    per_op[scheme][m] = {"median": statistics.median(values),
                                         "min": min(values), "max": max(values)}
        if PLAIN in per_op and TLS in per_op:
            per_op["ratio_tls_over_plain"] = {
                m: per_op[TLS][m]["median"] / per_op[PLAIN][m]["median"]
                if per_op[PLAIN][m]["median"] else None for m in METRICS}
        if per_op:
            summary[op] = per_op
    return summary


def format_table(summary: dict[str, Any], title: str) -> str:
    head = ("op", "scheme", "MB/s", "MiB/s", "server CPU s/GiB", "curl CPU s/GiB")
    rows: list[tuple[str, ...]] = []
    for op, per_op in summary.items():
        for scheme in (PLAIN, TLS):
            if scheme in per_op:
                m = per_op[scheme]
                rows.append((op, scheme, *(f"{m[k]['median']:.{1 if k.endswith('per_s') else 2}f}"
                                           for k in METRICS)))
        if ratio := per_op.get("ratio_tls_over_plain"):
            rows.append((op, "tls/plain",
                         *("n/a" if ratio[k] is None else f"{ratio[k]:.2f}x" for k in METRICS)))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [title]
    for r in (head, *rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def tls_title(size: int, rounds: int, key_type: str, report: dict[str, Any]) -> str:
    curl = report.get("negotiated", {}).get("curl", {})
    suite = f"{curl.get('version', '?')} {curl.get('cipher', '?')}"
    return (f"Blob push/pull, TLS against plain HTTP: {fmt_size(size)} blob, medians of "
            f"{rounds} round(s); curl {suite}, {KEY_TYPES[key_type]} certificate; "
            "MB = 10^6 bytes, MiB = 2^20; CPU is user+sys per 2^30 bytes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Blob push/pull throughput: TLS against plain HTTP.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=parse_size, default="1GiB", help="blob size; K/M/G binary")
    p.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    p.add_argument("--workers", type=int, default=1, help="`registry serve --workers`")
    p.add_argument("--key-type", choices=tuple(KEY_TYPES), default="ec",
                   help="CA and server keys: EC P-256 or RSA 2048")
    p.add_argument("--tmp-dir", type=Path, default=None,
                   help="blob, certificates and data dirs; default: $TMPDIR or /tmp")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results path (default: bench/results/tls-<timestamp>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server logs)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.workers < 1:
        p.error("--rounds and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")
    base = Path(tempfile.mkdtemp(prefix="tls-bench-", dir=args.tmp_dir)).resolve()
    need = args.size * 3 + 256 * MiB  # the blob, one data dir's upload and blob, slack
    if (free := shutil.disk_usage(base).free) < need:
        shutil.rmtree(base, ignore_errors=True)
        raise SystemExit(f"not enough free space in {base}: need {fmt_size(need)}, "
                         f"have {fmt_size(free)}")
    started = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"tls-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {
        "benchmark": "tls",
        "started": started.isoformat(),
        "complete": False,
        "args": {"size": args.size, "rounds": args.rounds, "workers": args.workers,
                 "key_type": args.key_type},
        "certificate": KEY_TYPES[args.key_type],
        "server_cmd": f"env {' '.join(SERVER_ENV)} [REGISTRY_SERVER_TLS_CERT_FILE=… "
                      f"REGISTRY_SERVER_TLS_KEY_FILE=…] {sys.executable} -m registry serve "
                      f"--host 127.0.0.1 --port <free> --data-dir <fresh> --workers {args.workers}",
        "machine": machine_info({}, curl=run_quiet(["curl", "--version"]),
                                openssl=ssl.OPENSSL_VERSION),
        "git_commit": git_commit(),
        # the servers run from the work tree: uncommitted changes there are measured too
        "git_dirty": bool(run_quiet(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                     "--", "registry", "storage"])),
        "units": {"mb_per_s": "10^6 bytes/s", "mib_per_s": "2^20 bytes/s",
                  "seconds": "curl's time_total of the PUT or GET",
                  "cpu_s_per_gib": "server CPU seconds (user+sys, process tree) per 2^30 bytes",
                  "client_cpu_s_per_gib": "curl's CPU seconds per 2^30 bytes"},
    }
    result: dict[str, Any] = {}

    def run() -> None:
        run_rounds(args, base, result)
        report["complete"] = True

    try:
        rc = run_guarded(run)
    finally:
        if args.keep_tmp:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    report.update(result)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarize(result.get("samples", []))
    if result.get("samples"):
        print(format_table(report["summary"], tls_title(args.size, args.rounds,
                                                        args.key_type, report)))
        write_report(output, report, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
