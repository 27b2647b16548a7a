"""Load test of `tandem serve` on loopback: a real uvicorn process per backend (onnx, torch).

Several concurrent clients send a bounded number of requests (and stop at a time limit),
mixing valid batches with malformed payloads (wrong feature count, NaN, broken JSON, oversized
batch, bad base64, unknown field, empty batch). Every valid request must get 200 and every
malformed one a 4xx; the run fails on any 5xx or dropped connection. Prints, per backend and
batch size (1 row, 256 rows): requests/s over all requests of the phase and p50/p99 latency of
the valid ones. A benchmark, not a test: nothing here gates CI.

    python benchmarks/serve_load.py --model-dir models            # after `dvc repro` (export)
    python benchmarks/serve_load.py --model-dir models --requests-1 1700 --requests-256 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

MALFORMED_SHARE = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, backend: str, port: int, max_batch: int, threads: int):
    cmd = [
        sys.executable, "-m", "tandem.cli", "serve", "--model-dir", str(model_dir),
        "--backend", backend, "--port", str(port), "--max-batch", str(max_batch),
        "--threads", str(threads),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def payloads(rows: np.ndarray, batch: int, max_batch: int) -> dict[str, list[bytes]]:
    """Pre-encoded bodies: valid batches of ``batch`` rows and a set of malformed ones."""
    rng = np.random.RandomState(0)
    valid = []
    for _ in range(8):
        idx = rng.randint(0, len(rows), batch)
        valid.append(json.dumps({"instances": rows[idx].tolist()}).encode())
    width = rows.shape[1]
    one = rows[:1].tolist()
    nan_row = json.dumps({"instances": one})[:-3] + ", NaN]]}"
    malformed = [
        json.dumps({"instances": [r[:-1] for r in rows[:batch].tolist()]}).encode(),  # count
        nan_row.replace(f"{one[0][-1]}, NaN", "NaN").encode(),  # NaN in place of the last value
        b'{"instances": [[0.1, 0.2',  # broken JSON
        json.dumps({"instances": [[0.0] * width] * (max_batch + 1)}).encode(),  # oversized
        json.dumps({"images": ["%%% not base64"]}).encode(),
        json.dumps({"features": one}).encode(),  # unknown field
        json.dumps({"instances": []}).encode(),  # empty
        json.dumps({"instances": [["x"] * width]}).encode(),  # not numbers
        base64.b64encode(b"plain text").replace(b"=", b""),  # not JSON at all
    ]
    return {"valid": valid, "malformed": malformed}


async def client(url, jobs, results, deadline):
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        while jobs and time.monotonic() < deadline:
            kind, body = jobs.pop()
            start = time.perf_counter()
            try:
                r = await session.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                status = r.status_code
            except httpx.HTTPError as exc:
                status = f"dropped: {type(exc).__name__}"
            results.append((kind, status, time.perf_counter() - start))


def run_phase(url, bodies, n_requests, n_clients, max_seconds):
    rng = random.Random(1)
    jobs = []
    for _ in range(n_requests):
        kind = "malformed" if rng.random() < MALFORMED_SHARE else "valid"
        jobs.append((kind, rng.choice(bodies[kind])))
    results: list = []
    start = time.perf_counter()
    deadline = time.monotonic() + max_seconds

    async def main():
        await asyncio.gather(*(client(url, jobs, results, deadline) for _ in range(n_clients)))

    asyncio.run(main())
    elapsed = time.perf_counter() - start
    return results, elapsed


def summarise(backend, batch, results, elapsed):
    valid = [r for r in results if r[0] == "valid"]
    bad = [r for r in results if r[0] == "malformed"]
    lat = np.array([r[2] for r in valid if r[1] == 200]) * 1000
    return {
        "backend": backend,
        "batch": batch,
        "requests": len(results),
        "valid": len(valid),
        "malformed": len(bad),
        "ok_200": sum(r[1] == 200 for r in valid),
        "4xx": sum(isinstance(r[1], int) and 400 <= r[1] < 500 for r in results),
        "5xx": sum(isinstance(r[1], int) and r[1] >= 500 for r in results),
        "dropped": sum(isinstance(r[1], str) for r in results),
        "wrong": sum(r[1] != 200 for r in valid)
        + sum(not (isinstance(r[1], int) and 400 <= r[1] < 500) for r in bad),
        "req_s": len(results) / elapsed,
        "rows_s": len(valid) * batch / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=Path("models/usps"))
    ap.add_argument("--data", type=Path, default=Path("data/usps/test.parquet"),
                    help="rows to send (raw columns; extra columns are dropped)")  # fmt: skip
    ap.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests-1", type=int, default=1700)
    ap.add_argument("--requests-256", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=120, help="per phase")
    ap.add_argument("--threads", type=int, default=0, help="server inference threads")
    ap.add_argument("--json", type=Path, help="also write the rows of the table here")
    args = ap.parse_args()

    from tandem import inference

    pipe = inference.load(args.model_dir)
    rows = pd.read_parquet(args.data)[pipe.feature_names].to_numpy(dtype=float)
    max_batch = 512
    table = []
    for backend in args.backends:
        port = free_port()
        server = start_server(args.model_dir, backend, port, max_batch, args.threads)
        try:
            url = f"http://127.0.0.1:{port}/predict"
            for batch, n in ((1, args.requests_1), (256, args.requests_256)):
                bodies = payloads(rows, batch, max_batch)
                run_phase(url, bodies, 20, 2, 30)  # warm up
                results, elapsed = run_phase(url, bodies, n, args.clients, args.max_seconds)
                table.append(summarise(backend, batch, results, elapsed))
        finally:
            server.terminate()
            server.wait(timeout=30)
    cols = ["backend", "batch", "requests", "valid", "malformed", "4xx", "5xx", "dropped",
            "wrong", "req_s", "rows_s", "p50_ms", "p99_ms"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in table:
        cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    total = sum(r["requests"] for r in table)
    failures = sum(r["5xx"] + r["dropped"] + r["wrong"] for r in table)
    n_5xx, dropped = sum(r["5xx"] for r in table), sum(r["dropped"] for r in table)
    print(f"\n{total} requests, {args.clients} concurrent clients, {n_5xx} 5xx, {dropped} dropped")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
