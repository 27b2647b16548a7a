"""Hostile inputs for the predict / serve tests, made without holding them decoded: PNGs of any
declared size written row by row (a 12000x12000 picture is 145 KB and never 144 MB in the test
process), and a real uvicorn server in a subprocess whose memory can be read from /proc."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, ink_rows: Iterable[int] = ()) -> bytes:
    """An 8-bit grey PNG, black but for white ``ink_rows``, compressed a row at a time."""
    ink, blank = b"\0" + b"\xff" * width, b"\0" * (width + 1)
    rows = set(ink_rows)
    packer = zlib.compressobj(9)
    parts = [packer.compress(ink if y in rows else blank) for y in range(height)]
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one row: enough for a reader that
    checks the size from the header, truncated for one that decodes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------ a real server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, log: Path, backend: str = "torch") -> Iterator[tuple[int, int]]:
    """``tandem.serve.serve`` on loopback in a subprocess (its default limits); yields
    (pid, port) once /health answers."""
    port = free_port()
    code = (
        "from tandem.serve import serve; "
        f"serve({str(model_dir)!r}, backend={backend!r}, port={port}, log_level='warning')"
    )
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            try:
                if get(port, "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post_json(port: int, payload, timeout: float = 120) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(payload).encode()
        conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in MB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak(pid: int) -> None:
    """Set the process's VmHWM back to its VmRSS (Linux: ``5`` to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def has_proc() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/clear_refs")
