"""`tandem predict`: CSV, parquet and PNG digits in; the entry's labels (its label names) out."""

from __future__ import annotations

import json

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
from PIL import Image
from typer.testing import CliRunner

from tandem.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def usps_dir(tmp_path_factory):
    model_dir = build_usps(tmp_path_factory.mktemp("usps"))
    return exported(model_dir, usps_test(model_dir))


@pytest.fixture(scope="module")
def tabular_dir(tmp_path_factory):
    return build_tabular(tmp_path_factory.mktemp("tabular"))


def predict(*args: str):
    return runner.invoke(app, ["predict", *map(str, args)])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_csv_rows_get_the_evaluate_stage_labels(usps_dir, tmp_path, backend):
    test = pd.read_parquet(usps_test(usps_dir))
    test.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    result = predict(
        tmp_path / "rows.csv", "--model-dir", usps_dir, "-o", out, "--backend", backend
    )
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out, dtype={"prediction": str})
    assert list(pred["prediction"]) == list(evaluate_labels(usps_dir, test))
    probs = pred.filter(like="proba_")
    assert probs.shape[1] == 10 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_png_digits_get_the_evaluate_stage_labels(usps_dir, tmp_path):
    """PNGs of the same digits, at 16x16, upscaled to 32x32, and as dark ink on white paper."""
    images, labels = digit_images(20, seed=5)
    rows = usps_frame(images, labels)  # what the data set would hold for these digits
    expected = list(evaluate_labels(usps_dir, rows))
    for variant in ("plain", "large", "inverted"):
        folder = tmp_path / variant
        folder.mkdir()
        for i, img in enumerate(images):
            if variant == "large":
                img = np.kron(img, np.ones((2, 2), dtype=np.uint8))
            elif variant == "inverted":
                img = 255 - img
            Image.fromarray(img, mode="L").save(folder / f"digit_{i:02d}.png")
        out = tmp_path / f"{variant}.json"
        result = predict(folder, "--model-dir", usps_dir, "--output", out)
        assert result.exit_code == 0, result.output
        records = json.loads(out.read_text())
        assert [r["prediction"] for r in records] == expected, variant
        assert records[3]["file"].endswith("digit_03.png")


def test_tabular_parquet_with_categoricals(tabular_dir, tmp_path):
    test = pd.read_parquet(tabular_test(tabular_dir))
    out = tmp_path / "pred.parquet"
    result = predict(tabular_test(tabular_dir), "--model-dir", tabular_dir, "-o", out)
    assert result.exit_code == 0, result.output
    pred = pd.read_parquet(out)
    assert list(pred["prediction"]) == list(evaluate_labels(tabular_dir, test))
    assert list(pred.columns) == ["prediction", "proba_no", "proba_yes"]


def test_stdout_when_no_output(tabular_dir, tmp_path):
    test = pd.read_parquet(tabular_test(tabular_dir)).head(3)
    test.to_csv(tmp_path / "rows.csv", index=False)
    result = predict(tmp_path / "rows.csv", "--model-dir", tabular_dir)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "prediction,proba_no,proba_yes"


def test_missing_columns_are_named_and_nothing_is_written(tabular_dir, tmp_path):
    test = pd.read_parquet(tabular_test(tabular_dir)).drop(columns=["city", "age"])
    test.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    result = predict(tmp_path / "rows.csv", "--model-dir", tabular_dir, "-o", out)
    assert result.exit_code == 1
    assert "'age'" in result.output and "'city'" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "rows.csv"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("text_in_number", "column 'age' must hold numbers"),
        ("unknown_input", "unknown input type '.txt'"),
        ("unknown_output", "unknown output type '.xlsx'"),
        ("no_model", "is not a model directory"),
    ],
)
def test_clear_errors(tabular_dir, tmp_path, case, message):
    test = pd.read_parquet(tabular_test(tabular_dir)).head(5)
    rows, out, model_dir = tmp_path / "rows.csv", tmp_path / "pred.csv", tabular_dir
    if case == "text_in_number":
        test["age"] = test["age"].astype(object)
        test.loc[2, "age"] = "forty"
    elif case == "unknown_input":
        rows = tmp_path / "rows.txt"
    elif case == "unknown_output":
        out = tmp_path / "pred.xlsx"
    else:
        model_dir = tmp_path / "nowhere"
    test.to_csv(rows, index=False)
    result = predict(rows, "--model-dir", model_dir, "-o", out)
    assert result.exit_code != 0
    assert message in result.output
    assert not out.exists()


def test_images_are_refused_by_a_tabular_model_and_bad_images_named(
    usps_dir, tabular_dir, tmp_path
):
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "blank.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = predict(tmp_path / "blank.png", "--model-dir", tabular_dir)
    assert (
        result.exit_code == 1
        and "images need a model trained on an image data set" in result.output
    )
    result = predict(tmp_path / "blank.png", "--model-dir", usps_dir)
    assert result.exit_code == 1 and "blank.png" in result.output and "blank" in result.output
    result = predict(tmp_path / "broken.png", "--model-dir", usps_dir)
    assert result.exit_code == 1 and "broken.png is not a readable image" in result.output


def test_tta_averages_the_shifted_images_as_evaluate_does(usps_dir, tmp_path):
    """`--tta`: the probabilities of `predict_proba_tta` (evaluate.tta's), not the plain ones."""
    from tandem import inference

    test = pd.read_parquet(usps_test(usps_dir))
    test.to_csv(tmp_path / "rows.csv", index=False)
    outputs = {}
    for flag in ((), ("--tta",)):
        out = tmp_path / f"pred{len(flag)}.csv"
        result = predict(tmp_path / "rows.csv", "--model-dir", usps_dir, "-o", out, *flag)
        assert result.exit_code == 0, result.output
        outputs[bool(flag)] = pd.read_csv(out, dtype={"prediction": str}).filter(like="proba_")
    pipe = inference.load(usps_dir)
    X = pipe.preprocessor.transform(test[pipe.feature_names])
    expected = pd.DataFrame(pipe.estimator.predict_proba_tta(X),
                            columns=[f"proba_{c}" for c in pipe.estimator.classes_])  # fmt: skip
    assert list(outputs[True].columns) == [f"proba_{k}" for k in range(1, 11)]  # natural order
    assert np.allclose(outputs[True].to_numpy(), expected[outputs[True].columns], atol=1e-6)
    assert not np.allclose(outputs[True].to_numpy(), outputs[False].to_numpy(), atol=1e-4)


@pytest.mark.parametrize(
    "which, message",
    [
        ("onnx", "test-time augmentation runs in torch"),
        ("tabular", "is not an image classifier"),
    ],
)
def test_tta_is_refused_where_it_cannot_run(usps_dir, tabular_dir, tmp_path, which, message):
    model_dir = usps_dir if which == "onnx" else tabular_dir
    rows = pd.read_parquet(usps_test(usps_dir) if which == "onnx" else tabular_test(tabular_dir))
    rows.head(5).to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    args = ("--backend", "onnx") if which == "onnx" else ()
    result = predict(tmp_path / "rows.csv", "--model-dir", model_dir, "-o", out, "--tta", *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("value", ["1e40", "-3.5e38", "1" + "0" * 400, "inf"])
def test_values_beyond_float32_are_refused_naming_column_and_row(usps_dir, tmp_path, backend,
                                                                 value):  # fmt: skip
    """float32 is what the network and model.onnx compute in: a larger value would become
    infinity there and the probabilities NaN, a silent wrong answer. Both backends refuse it."""
    test = pd.read_parquet(usps_test(usps_dir)).head(6).drop(columns="class")
    text = test.to_csv(index=False).splitlines()
    cells = text[4].split(",")  # data row 3
    cells[5] = value  # column int5
    text[4] = ",".join(cells)
    (tmp_path / "rows.csv").write_text("\n".join(text) + "\n")
    out = tmp_path / "pred.csv"
    result = predict(tmp_path / "rows.csv", "--model-dir", usps_dir, "-o", out,
                     "--backend", backend)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "column 'int5', row 3" in result.output, result.output
    assert "float32" in result.output or "infinite" in result.output, result.output
    assert "unexpected" not in result.output and not out.exists()


def test_a_folder_of_jpg_jpeg_and_png_digits_is_read_as_training_reads_it(usps_dir, tmp_path):
    images, labels = digit_images(6, seed=3)
    folder = tmp_path / "digits"
    folder.mkdir()
    names = ["a.png", "b.jpg", "c.JPEG", "d.jpeg", "e.png", "f.jpg"]
    for img, name in zip(images, names, strict=True):
        Image.fromarray(np.kron(img, np.ones((4, 4), np.uint8)), mode="L").save(
            folder / name, quality=95
        )
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.json"
    result = predict(folder, "--model-dir", usps_dir, "-o", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["file"].rsplit("/", 1)[-1] for r in records] == names
    pngs = [r["prediction"] for r in records if r["file"].endswith(".png")]
    expected = list(evaluate_labels(usps_dir, usps_frame(images, labels)))
    assert pngs == [expected[0], expected[4]]


def test_an_image_over_pils_limit_is_named_not_unexpected(usps_dir, tmp_path):
    from _hostile import png_header

    (tmp_path / "huge.png").write_bytes(png_header(20000, 20000))
    result = predict(tmp_path / "huge.png", "--model-dir", usps_dir)
    assert result.exit_code == 1
    assert "huge.png is too large to decode" in result.output, result.output
    assert "unexpected" not in result.output


@pytest.mark.parametrize(
    "broken, backend, message",
    [
        ("model.onnx", "onnx", "model.onnx is not an ONNX model onnxruntime can load"),
        ("model/config.json", "torch", "config.json holds a JSON list, not a tandem model config"),
    ],
)
def test_a_broken_model_directory_is_an_error_that_names_the_file(usps_dir, tmp_path, broken,
                                                                   backend, message):  # fmt: skip
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(usps_dir, model_dir)
    (model_dir / broken).write_text("[1, 2]")
    test = pd.read_parquet(usps_test(usps_dir)).head(3)
    test.to_csv(tmp_path / "rows.csv", index=False)
    result = predict(tmp_path / "rows.csv", "--model-dir", model_dir, "--backend", backend)
    assert result.exit_code == 1
    assert message in result.output, result.output
    assert "unexpected" not in result.output


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_an_output_that_is_not_finite_is_refused_naming_the_row(usps_dir, tmp_path, backend):
    """3e38 fits float32, but the scaler (pixel spread under 1) takes it past float32's range
    inside the model: the row's probabilities would be NaN, so the row is refused instead."""
    test = pd.read_parquet(usps_test(usps_dir)).head(6).drop(columns="class")
    test.loc[4, "int5"] = 3e38
    test.to_csv(tmp_path / "rows.csv", index=False)
    result = predict(tmp_path / "rows.csv", "--model-dir", usps_dir, "--backend", backend)
    assert result.exit_code == 1, result.output
    assert "row 4: " in result.output and "float32" in result.output, result.output
    assert "unexpected" not in result.output
