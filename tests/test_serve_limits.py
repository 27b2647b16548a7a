"""`tandem serve` within bounds: body size, values per body, image pixels from the header, the
event loop free for /health, and answers that never echo a huge input back.

The first tests run a real uvicorn server in a subprocess (the torch backend of a tiny USPS-like
model, default limits) and read its memory from /proc; the others use the app in-process.
"""

from __future__ import annotations

import http.client
import select
import socket
import statistics
import threading
import time

import numpy as np
import pytest
from _hostile import (
    b64,
    has_proc,
    memory_mb,
    png_bytes,
    png_header,
    post_json,
    reset_peak,
    running_server,
)
from _models import build_usps, digit_images
from fastapi.testclient import TestClient
from test_serve import png_base64

from tandem.serve import create_app

MB = 1_000_000
ROW = {f"int{i}": float(v) for i, v in enumerate(digit_images(1)[0][0].ravel())}


@pytest.fixture(scope="module")
def usps_dir(tmp_path_factory):
    return build_usps(tmp_path_factory.mktemp("usps"))


@pytest.fixture(scope="module")
def server(usps_dir, tmp_path_factory):
    if not has_proc():
        pytest.skip("reads the server's memory from Linux's /proc")
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(usps_dir, log, backend="torch") as (pid, port):
        yield pid, port


@pytest.fixture(scope="module")
def client(usps_dir):
    return TestClient(create_app(usps_dir, backend="torch"))


def upload(port: int, body: bytes, *, chunked: bool, pause: float = 0.0, step: int = 1 << 18):
    """POST ``body`` to /predict over a raw socket, ``step`` bytes at a time, reading the answer
    as soon as the server gives one (a server that answers early stops the upload). Returns
    (status line and body of the answer, bytes sent, seconds until the answer)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    head += (
        b"Transfer-Encoding: chunked\r\n\r\n"
        if chunked
        else b"Content-Length: %d\r\n\r\n" % len(body)
    )  # fmt: skip
    start, sent = time.monotonic(), 0
    try:
        sock.sendall(head)
        while sent < len(body) and not select.select([sock], [], [], 0)[0]:
            piece = body[sent : sent + step]
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
            time.sleep(pause)
        if sent == len(body) and chunked:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: the answer is still to be read
    sock.settimeout(60)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return answer.decode(errors="replace"), sent, time.monotonic() - start


def numbers_body(size: int) -> bytes:
    """Valid JSON of ``size`` bytes: rows of 256 numbers (costly to parse, unlike a string)."""
    row = "[" + ", ".join(["0.5"] * 256) + "]"
    return ('{"instances": [' + ", ".join([row] * (size // (len(row) + 2))) + "]}").encode()


# ------------------------------------------------------------------------------ a real server
def test_a_decompression_bomb_is_refused_from_its_header(server):
    """A 145 KB PNG of 12000x12000 pixels, alone and six in one request: refused before it
    is decoded, and the server's peak memory hardly moves."""
    pid, port = server
    bomb = png_bytes(12000, 12000, ink_rows=range(5000, 7000))
    assert len(bomb) < 200_000
    reset_peak(pid)
    before = memory_mb(pid)["VmRSS"]
    for count in (1, 6):
        status, text = post_json(port, {"images": [b64(bomb)] * count})
        assert status in (413, 422), text
        assert "image 0 is 12000x12000" in text and "--max-image-pixels" in text
    grown = memory_mb(pid)["VmHWM"] - before
    assert grown < 200, f"the server's peak memory grew by {grown:.0f} MB"
    # a picture at the limit (4096 x 4096) is read, at a bounded cost (docs/serving.md)
    largest = png_bytes(4096, 4096, ink_rows=range(1500, 2500))
    reset_peak(pid)
    before = memory_mb(pid)["VmRSS"]
    status, text = post_json(port, {"images": [b64(largest)]})
    assert status == 200, text
    grown = memory_mb(pid)["VmHWM"] - before
    assert grown < 400, f"a 4096x4096 picture took {grown:.0f} MB at its peak"


def test_health_answers_fast_during_a_50_mb_upload(server):
    """One client streams a 50 MB body (chunked: no Content-Length to refuse it by) slowly;
    /health, asked all the while and a second after, answers in under 100 ms every time."""
    _, port = server
    body = numbers_body(50 * MB)
    result = {}

    def uploading():
        result["answer"] = upload(port, body, chunked=True, pause=0.01)

    thread = threading.Thread(target=uploading)
    latencies, finished = [], None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    thread.start()
    while finished is None or time.monotonic() - finished < 1.0:
        start = time.perf_counter()
        conn.request("GET", "/health")
        assert conn.getresponse().read()
        latencies.append(time.perf_counter() - start)
        if finished is None and not thread.is_alive():
            finished = time.monotonic()
        time.sleep(0.02)
    thread.join()
    conn.close()
    answer, sent, _ = result["answer"]
    worst = max(latencies)
    assert worst < 0.1, (
        f"/health took up to {worst * 1000:.0f} ms "
        f"(median {statistics.median(latencies) * 1000:.1f} ms)"
    )
    assert len(latencies) >= 10
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert sent < 20 * MB  # cut off near the 16 MB limit, the rest never read


def test_the_body_limit_answers_before_reading_the_body(server):
    _, port = server
    # a declared Content-Length over the limit: 413 at once, with nothing of the body sent
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    answer = b""
    try:
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            answer += chunk
    except TimeoutError:
        answer += b" (no more in 5 s)"
    finally:
        sock.close()
    answer = answer.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "50.0 MB is over the server's limit of 16 MB (--max-body-mb)" in answer
    assert "connection: close" in answer.lower()
    # a chunked body (no length given) is cut off as it passes the limit
    body = numbers_body(25 * MB)
    answer, sent, _ = upload(port, body, chunked=True)
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert "over the server's limit of 16 MB" in answer
    assert sent < len(body)
    # and the server goes on serving
    status, text = post_json(port, {"pixels": digit_images(2)[0].astype(float).tolist()})
    assert status == 200, text


# ------------------------------------------------------------------------------ in-process
def test_limits_are_configurable_and_shown(usps_dir):
    app = create_app(usps_dir, backend="torch", max_batch=8, max_body_mb=0.5,
                     max_image_pixels=1000 * 1000)  # fmt: skip
    client = TestClient(app)
    meta = client.get("/metadata").json()
    assert meta["max_batch"] == 8
    assert meta["limits"] == {"max_batch": 8, "max_body_bytes": 500_000,
                              "max_image_pixels": 1_000_000}  # fmt: skip
    big = client.post("/predict", json={"instances": [[0.5] * 256] * 8, "pad": "x" * 500_000})
    assert big.status_code == 413 and "--max-body-mb" in big.text
    chunks = (b'{"instances": [[' + b"0.5, " * 50_000 for _ in range(4))  # chunked, no length
    streamed = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit of 0.5 MB" in streamed.text
    images = [png_base64(digit_images(1)[0][0]), b64(png_header(1001, 1000))]
    refused = client.post("/predict", json={"images": images})
    assert refused.status_code == 413
    assert "image 1 is 1001x1000 = 1,001,000 pixels; at most 1,000,000" in refused.text
    assert client.post("/predict", json={"images": images[:1]}).status_code == 200
    for bad in ({"max_batch": 0}, {"max_body_mb": 0}, {"max_image_pixels": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            create_app(usps_dir, backend="torch", **bad)


def test_an_image_over_pils_own_limit_is_a_413_not_a_500(client):
    """PIL refuses, at open, an image of more than twice its MAX_IMAGE_PIXELS (a
    DecompressionBombError): a 413 that names the image."""
    response = client.post("/predict", json={"images": [b64(png_header(20000, 20000))]})
    assert response.status_code == 413, response.text
    assert "image 0 is" in response.text


def test_unknown_keys_and_values_beyond_a_batch_are_refused_before_parsing(client):
    """A row of 300,000 unknown keys (4 MB, under the byte limit) is more values than
    max_batch rows of the model hold: a quick 413, nothing parsed."""
    with_ids = client.post("/predict", json={"rows": [dict(ROW, id=7, note="kept out")]})
    assert with_ids.status_code == 200, with_ids.text
    flooded = dict(ROW, **{f"k{i}": 0 for i in range(300_000)})
    start = time.perf_counter()
    response = client.post("/predict", json={"rows": [flooded]})
    assert response.status_code == 413, response.text[:300]
    assert "values; max_batch=256 rows of this model's 256 features hold at most" in response.text
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "payload, where",
    [
        ({"rows": [ROW | {"int7": "x" * MB}]}, "column 'int7' must hold numbers; row 0 has 'xxx"),
        ({"instances": [["x" * MB] + [0.5] * 255]}, "column 'int0' must hold numbers"),
        ({"pixels": [[["x" * MB]]]}, "pixels"),
        ({"images": "x" * MB}, "images"),
        ({"x" * MB: 1}, "Extra inputs are not permitted"),
        ({"rows": [ROW | {"int0": int("9" * 400)}]}, "an integer of about 400 digits"),
    ],
)
def test_answers_quote_at_most_an_excerpt_of_the_input(client, payload, where):
    response = client.post("/predict", json=payload)
    assert response.status_code == 422, response.text[:300]
    assert where in response.text
    assert len(response.content) < 2000, f"{len(response.content):,} bytes answered"


def test_expected_errors_at_load_are_value_errors(usps_dir, tmp_path):
    """A broken model.onnx or a config.json that is no object: a ValueError that names the
    file (the CLI reports it in a line), not an unexpected error."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(usps_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="model.onnx is not an ONNX model onnxruntime can load"):
        create_app(broken, backend="onnx")
    (broken / "model" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json holds a JSON list"):
        create_app(broken, backend="torch")


def test_images_are_read_one_at_a_time(client, monkeypatch):
    """Each image is opened, reduced to the model's shape, and dropped before the next is
    opened: at most one decoded picture is held at a time."""
    from PIL import Image

    from tandem import data

    events = []
    real_open, real_pixels = Image.open, data.image_pixels

    def opening(*args, **kwargs):
        events.append("open")
        return real_open(*args, **kwargs)

    def reducing(*args, **kwargs):
        events.append("reduce")
        return real_pixels(*args, **kwargs)

    monkeypatch.setattr(Image, "open", opening)
    monkeypatch.setattr(data, "image_pixels", reducing)
    images, _ = digit_images(5)
    response = client.post("/predict", json={"images": [png_base64(i) for i in images]})
    assert response.status_code == 200, response.text
    assert events == ["open", "reduce"] * 5
    assert np.asarray(response.json()["probabilities"]).shape == (5, 10)


def test_fastapis_own_validation_errors_quote_an_excerpt(usps_dir):
    """Any route's parameters validated by FastAPI (a route added here) answer 422 without
    echoing a huge value."""
    app = create_app(usps_dir, backend="torch")

    @app.get("/square")
    def square(n: int) -> int:
        return n * n

    client = TestClient(app)
    assert client.get("/square", params={"n": 7}).json() == 49
    response = client.get("/square", params={"n": "x" * 20_000})
    assert response.status_code == 422
    assert "(20,000 characters)" in response.text
    assert len(response.content) < 1000
