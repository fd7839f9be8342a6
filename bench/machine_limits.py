"""This machine's ceilings for blob transfers, measured in the same run as the registries.

A section of bench/run.py (run it through that script).

- `sha256`: one core hashing `size` bytes with hashlib (OpenSSL), fed from one 1 MiB
  buffer, so no I/O is counted. Every push has to hash every byte on one core (a digest
  is sequential), so no single push can beat this rate.
- `sendfile-curl`: a minimal HTTP server (this file run as a script, one process) answers
  a GET with the headers and one `os.sendfile()` of the whole file, from the page cache,
  over loopback; the client is the one the blob pulls use, `curl -o /dev/null`, timed the
  same way (process start to exit). A registry cannot serve a file faster than this.
- `sendfile-raw`: the same server, with a Python `recv_into` loop (one 1 MiB buffer) in
  this process as the client: the loopback ceiling without curl.
- `write-curl`: for comparison, the same server sending with `pread` + `send` of one 1 MiB
  buffer instead of sendfile, to curl. On some kernels this beats sendfile over loopback,
  and a registry that streams with large writes can then beat the sendfile figure.

The file is the run's blob (already in the page cache); each figure is MB/s (10^6 B/s).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from blob_throughput import CURL, MB, MiB
from common import _die_with_parent, log, read_text

OPS = ("sha256", "sendfile-curl", "sendfile-raw", "write-curl")


def sha256_rate(size: int) -> dict[str, Any]:
    block = os.urandom(MiB)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    remaining = size
    while remaining >= MiB:
        h.update(block)
        remaining -= MiB
    if remaining:
        h.update(block[:remaining])
    h.hexdigest()
    seconds = time.perf_counter() - t0
    return {"mb_per_s": size / MB / seconds, "seconds": seconds,
            "cpu_s": time.process_time() - cpu0}


def serve_sendfile(path: str) -> None:
    """Script mode: print the port, then answer each connection's one GET with the file."""
    size = os.path.getsize(path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        print(listener.getsockname()[1], flush=True)
        fd = os.open(path, os.O_RDONLY)
        while True:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        break
                    request += data
                if not data:
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Connection: close\r\n" + f"Content-Length: {size}\r\n\r\n".encode())
                offset = 0
                if request.startswith(b"GET /write "):  # pread + send of a 1 MiB buffer
                    buf = bytearray(MiB)
                    view = memoryview(buf)
                    while offset < size and (n := os.preadv(fd, [buf], offset)):
                        conn.sendall(view[:n])
                        offset += n
                while offset < size:
                    sent = os.sendfile(conn.fileno(), fd, offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent


class SendfileServer:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve-sendfile", str(path)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"sendfile server did not start: {line!r}")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def curl_rate(port: int, size: int, path: str = "/sendfile") -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([*CURL, "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    fields = out.stdout.split()
    if out.returncode != 0 or fields[:1] != ["200"] or int(float(fields[1])) != size:
        raise RuntimeError(f"sendfile via curl: rc={out.returncode} {out.stdout} {out.stderr}")
    return {"mb_per_s": size / MB / seconds, "seconds": seconds}


def raw_rate(port: int, size: int) -> dict[str, Any]:
    buf = bytearray(MiB)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /blob HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while (end := head.find(b"\r\n\r\n")) < 0:
            if not (n := s.recv_into(view)):
                raise RuntimeError("sendfile raw: connection closed in the headers")
            head += buf[:n]
        body = len(head) - end - 4
        while n := s.recv_into(view):
            body += n
    seconds = time.perf_counter() - t0
    if body != size:
        raise RuntimeError(f"sendfile raw: received {body} body bytes, expected {size}")
    return {"mb_per_s": size / MB / seconds, "seconds": seconds}


def run(blob_path: Path, size: int, rounds: int) -> list[dict[str, Any]]:
    samples = []
    server = SendfileServer(blob_path)
    try:
        for rnd in range(1, rounds + 1):
            for op in OPS:
                if op == "sha256":
                    s = sha256_rate(size)
                elif op == "sendfile-raw":
                    s = raw_rate(server.port, size)
                else:
                    path = "/write" if op == "write-curl" else "/sendfile"
                    s = curl_rate(server.port, size, path)
                samples.append({**s, "op": op, "target": "machine", "round": rnd})
                log(f"[limits round {rnd}/{rounds}] {op:<14}{s['mb_per_s']:9.1f} MB/s "
                    f"({s['seconds']:.2f}s)")
    finally:
        server.stop()
    return samples


def info() -> dict[str, Any]:
    flags = next((x for x in (read_text("/proc/cpuinfo") or "").splitlines()
                  if x.startswith("flags")), "")
    return {"sha_ni": " sha_ni" in flags, "hashlib_openssl": hashlib.sha256().name,
            "openssl": __import__("ssl").OPENSSL_VERSION}


if __name__ == "__main__" and sys.argv[1:2] == ["serve-sendfile"]:
    serve_sendfile(sys.argv[2])
