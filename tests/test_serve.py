"""`tandem serve`: the FastAPI app answers valid and invalid requests correctly."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from _models import (
    build_tabular,
    build_usps,
    digit_images,
    evaluate_labels,
    exported,
    tabular_test,
    usps_frame,
    usps_test,
)
from fastapi.testclient import TestClient
from PIL import Image

from tandem.serve import create_app


@pytest.fixture(scope="module")
def usps_dir(tmp_path_factory):
    model_dir = build_usps(tmp_path_factory.mktemp("usps"))
    return exported(model_dir, usps_test(model_dir))


@pytest.fixture(scope="module")
def tabular_dir(tmp_path_factory):
    model_dir = build_tabular(tmp_path_factory.mktemp("tabular"))
    return exported(model_dir, tabular_test(model_dir))


@pytest.fixture(scope="module", params=["onnx", "torch"])
def usps(usps_dir, request):
    return TestClient(create_app(usps_dir, backend=request.param, max_batch=64))


@pytest.fixture(scope="module")
def tabular(tabular_dir):
    return TestClient(create_app(tabular_dir, backend="onnx"))


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_health_and_metadata(usps, usps_dir):
    assert usps.get("/health").json()["status"] == "ok"
    meta = usps.get("/metadata").json()
    assert meta["n_features"] == 256 and meta["feature_names"][:2] == ["int0", "int1"]
    assert meta["classes"] == [str(k) for k in range(1, 11)]  # natural order
    assert meta["served"] == "plain"
    assert meta["accepts_images"] and meta["max_batch"] == 64
    assert len(meta["version"]["md5"]) == 32 and meta["version"]["source"] == "computed"
    assert meta["backend"] in ("onnx", "torch")


def test_instances_rows_images_and_pixels_agree_with_evaluate(usps, usps_dir):
    images, labels = digit_images(12, seed=7)
    rows = usps_frame(images, labels).drop(columns="class")
    expected = list(evaluate_labels(usps_dir, rows))
    answers = [
        usps.post("/predict", json={"instances": rows.to_numpy().tolist()}),
        usps.post("/predict", json={"rows": rows.to_dict(orient="records")}),
        usps.post("/predict", json={"images": [png_base64(img) for img in images]}),
        usps.post("/predict", json={"pixels": images.astype(float).tolist()}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == expected
        assert np.allclose(np.sum(body["probabilities"], axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"instances": [[0.0] * 255]}, 422, "has 255 values; the model takes 256"),
        ({"instances": [[0.0] * 256] * 65}, 413, "larger than max_batch=64"),
        ({"instances": [[None] * 256]}, 422, "finite numbers"),
        ({"instances": [["a"] * 256]}, 422, "column 'int0' must hold numbers; row 0 has 'a'"),
        ({"instances": []}, 422, "empty"),
        ({"rows": [{"int0": 1.0}]}, 422, "255 feature column(s) missing"),
        ({"images": ["not base64!"]}, 422, "not valid base64"),
        ({"images": [base64.b64encode(b"GIF89a?").decode()]}, 422, "not a readable image"),
        ({"pixels": [[[0.0] * 16] * 15]}, 422, "must be 16 x 16"),
        ({"pixels": [[[0.5] * 16] * 16]}, 422, "blank"),
        ({"instances": [[0.0] * 256], "images": []}, 422, "exactly one"),
        ({}, 422, "exactly one"),
        ({"features": [[0.0]]}, 422, "Extra inputs are not permitted"),
    ],
)
def test_invalid_requests_get_4xx_that_say_why(usps, payload, status, message):
    response = usps.post("/predict", json=payload)
    assert response.status_code == status, response.text
    assert message in response.text


def test_nan_infinity_and_broken_json_are_refused(usps):
    row = ", ".join(["0.5"] * 255)
    for bad in ("NaN", "Infinity", "-Infinity"):
        response = usps.post(
            "/predict", content=f'{{"instances": [[{bad}, {row}]]}}',
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert response.status_code == 422, bad
    response = usps.post(
        "/predict", content=b'{"instances": [[1, 2', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert usps.post("/predict", content=b"rows=1").status_code == 422
    assert usps.get("/predict").status_code == 405


def test_tabular_rows_with_categoricals_and_missing_values(tabular, tabular_dir):
    test = pd.read_parquet(tabular_test(tabular_dir)).drop(columns="label").head(30)
    records = test.astype(object).where(test.notna(), None).to_dict(orient="records")
    response = tabular.post("/predict", json={"rows": records})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == list(evaluate_labels(tabular_dir, test))
    names = tabular.get("/metadata").json()["feature_names"]
    instances = [[r[n] for n in names] for r in records]
    assert (
        tabular.post("/predict", json={"instances": instances}).json()["predictions"]
        == (response.json()["predictions"])
    )
    unknown = dict(records[0], colour="purple", city=None, age=None)
    assert tabular.post("/predict", json={"rows": [unknown]}).status_code == 200
    bad = tabular.post("/predict", json={"rows": [dict(records[0], age="old")]})
    assert bad.status_code == 422 and "column 'age' must hold numbers" in bad.text
    nan = tabular.post("/predict", content='{"rows": [{"age": NaN}]}',
                       headers={"content-type": "application/json"})  # fmt: skip
    assert nan.status_code == 422
    images = tabular.post("/predict", json={"pixels": [[[0.0] * 16] * 16]})
    assert images.status_code == 422 and "does not take images" in images.text


def test_unknown_backend_and_missing_onnx(tabular_dir, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        create_app(tabular_dir, backend="tensorflow")
    model_dir = build_tabular(tmp_path)  # not exported
    with pytest.raises(FileNotFoundError, match="tandem export"):
        create_app(model_dir, backend="onnx")
    assert TestClient(create_app(model_dir, backend="torch")).get("/health").status_code == 200


@pytest.fixture(scope="module", params=["onnx", "torch"])
def tabular_both(tabular_dir, request):
    return TestClient(create_app(tabular_dir, backend=request.param))


HUGE = ["1e39", "1e200", "1e308", "-1e308", "1" + "0" * 400, '"1e39"', '"-1e300"']


@pytest.mark.parametrize("value", HUGE)
def test_numbers_beyond_float32_get_a_422_that_names_the_field(usps, tabular_both, value):
    """The network and model.onnx compute in float32, where these become infinity and every
    probability NaN: refused on both backends, naming where the value is, quoting it short."""
    rest = ", ".join(["0.5"] * 255)
    pixels = ", ".join(f'"int{i}": 0.5' for i in range(1, 256))
    requests = [
        (usps, f'{{"instances": [[0.5, {rest}], [{value}, {rest}]]}}', ("int0", "1")),
        (usps, f'{{"rows": [{{"int0": {value}, {pixels}}}]}}', ("int0", "0")),
        (tabular_both, f'{{"rows": [{{"age": 30, "income-usd": {value}, "colour": "red", '
                       '"city": "Oslo"}]}', ("income-usd", "0")),
        (tabular_both, f'{{"instances": [[{value}, 1.0, "red", "Oslo"]]}}', ("age", "0")),
    ]  # fmt: skip
    for client, body, (column, row) in requests:
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (body[:80], response.text)
        detail = response.json()["detail"]
        assert column in detail and row in detail, detail
        assert "float32" in detail or "infinite" in detail, detail
        assert len(detail) < 400, detail


def test_pixels_read_dark_on_light_digits_as_images_do(usps):
    """Dark ink on light paper, as numbers or as PNGs of the same pictures: one answer, the
    answer for the light-on-dark originals; any range of numbers reads the same."""
    images, _ = digit_images(40, seed=11)
    inverted = 255 - images
    originals = usps.post("/predict", json={"images": [png_base64(i) for i in images]}).json()
    by_images = usps.post("/predict", json={"images": [png_base64(i) for i in inverted]}).json()
    by_pixels = usps.post("/predict", json={"pixels": inverted.astype(float).tolist()}).json()
    unit = usps.post("/predict", json={"pixels": (inverted / 255.0).tolist()}).json()
    for answer in (by_pixels, unit, originals):
        assert answer["predictions"] == by_images["predictions"]
        assert np.allclose(answer["probabilities"], by_images["probabilities"], atol=1e-6)


def test_bad_images_are_named_by_index_never_by_a_python_object(usps):
    png = png_base64(digit_images(1)[0][0])
    cut = base64.b64encode(base64.b64decode(png)[:60]).decode()  # a truncated PNG
    for images, index in (
        ([base64.b64encode(b"GIF89a?").decode()], 0),
        ([png, base64.b64encode(bytes(range(256)) * 4).decode()], 1),
        ([png, png, cut], 2),
    ):
        response = usps.post("/predict", json={"images": images})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"image {index} is not a readable image"), detail
        assert "BytesIO" not in detail and " at 0x" not in detail, detail
