"""The data sources beside OpenML: a user's CSV/parquet file, a folder of labelled images, and
scikit-learn's bundled sets. Bad sources are named with the problem (the file, the folder, the
column), never a raw parser error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tandem import data, inference
from tandem.data import DataError


@pytest.fixture
def table(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "y"], "y": [0, 1, 0, 1]})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    return tmp_path


def test_csv_and_parquet_files_give_the_same_frame(table):
    csv, info = data.read_table_file(table / "rows.csv", target="y")
    parquet, _ = data.read_table_file(table / "rows.parquet", target="y")
    pd.testing.assert_frame_equal(csv, parquet)
    assert info["source"] == "file" and info["rows"] == 4 and len(info["file_sha256"]) == 64
    (table / "rows.csv").write_text((table / "rows.csv").read_text().replace("4.0", "5.0"))
    assert data.read_table_file(table / "rows.csv", target="y")[1]["file_sha256"] != info[
        "file_sha256"]  # fmt: skip


def test_bad_files_are_named(table):
    with pytest.raises(DataError, match="missing.csv does not exist"):
        data.read_table_file(table / "missing.csv", target="y")
    with pytest.raises(DataError, match="no target column 'label'.*'a', 'b', 'y'"):
        data.read_table_file(table / "rows.csv", target="label")
    (table / "rows.txt").write_text("a,b\n")
    with pytest.raises(DataError, match="rows.txt: expected a .csv or .parquet file"):
        data.read_table_file(table / "rows.txt", target="y")
    (table / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet cannot be read as parquet"):
        data.read_table_file(table / "bad.parquet", target="y")


def write_digits(root, n_per_class=6, sizes=((8, 8),), mode="L"):
    """load_digits' 8x8 images as PNG/JPEG files, one folder per digit, in several sizes."""
    X, y = load_digits(return_X_y=True)
    for digit in range(3):
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True)
        for i, row in enumerate(X[y == digit][:n_per_class]):
            size = sizes[i % len(sizes)]
            image = Image.fromarray((row.reshape(8, 8) * 255 / 16).astype(np.uint8), mode="L")
            suffix = ".png" if i % 2 == 0 else ".jpg"
            image.convert(mode).resize(size[::-1]).save(folder / f"{i:03d}{suffix}")
    return root


def test_an_image_folder_becomes_pixel_rows_of_the_chosen_shape(tmp_path):
    root = write_digits(tmp_path / "digits", sizes=((8, 8), (12, 12), (20, 16)))
    frame, info = data.read_image_folder(root, shape=(16, 16), channels=1, target="label")
    assert frame.shape == (18, 257) and list(frame.columns[:2]) == ["pixel0", "pixel1"]
    assert frame["label"].tolist() == ["digit0"] * 6 + ["digit1"] * 6 + ["digit2"] * 6
    pixels = frame.drop(columns="label").to_numpy()
    assert np.allclose(pixels.min(axis=1), -1) and np.allclose(pixels.max(axis=1), 1)
    assert info["classes"] == {"digit0": 6, "digit1": 6, "digit2": 6}
    assert info["image_shape"] == [1, 16, 16]
    again, _ = data.read_image_folder(root, shape=(16, 16), channels=1, target="label")
    pd.testing.assert_frame_equal(frame, again)  # same folder, same frame
    # predict reads an image exactly as the source did
    with Image.open(root / "digit1" / "000.png") as image:
        assert np.allclose(inference.image_to_row(image), pixels[6])


def test_colour_images_keep_three_channels(tmp_path):
    root = write_digits(tmp_path / "rgb", n_per_class=2, mode="RGB")
    frame, info = data.read_image_folder(root, shape=(10, 8), channels=3, target="label")
    assert frame.shape == (6, 3 * 10 * 8 + 1) and info["image_shape"] == [3, 10, 8]


def test_bad_image_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="nowhere is not a folder"):
        data.read_image_folder(tmp_path / "nowhere", shape=(8, 8), channels=1, target="label")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class subfolders"):
        data.read_image_folder(tmp_path / "empty", shape=(8, 8), channels=1, target="label")
    root = write_digits(tmp_path / "d1", n_per_class=2)
    (root / "digit9").mkdir()
    with pytest.raises(DataError, match="class folder .*digit9 holds no .png/.jpg/.jpeg images"):
        data.read_image_folder(root, shape=(8, 8), channels=1, target="label")
    root = write_digits(tmp_path / "d2", n_per_class=2)
    (root / "digit1" / "broken.png").write_bytes(b"\x89PNG not an image")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        data.read_image_folder(root, shape=(8, 8), channels=1, target="label")
    root = write_digits(tmp_path / "d3", n_per_class=2)
    Image.new("L", (8, 8), 128).save(root / "digit2" / "blank.png")
    with pytest.raises(DataError, match="blank.png: the image is blank"):
        data.read_image_folder(root, shape=(8, 8), channels=1, target="label")


def test_sklearn_sets_load_offline_with_the_named_target():
    frame, info = data.load_sklearn_frame("load_iris", target="species")
    assert frame.shape == (150, 5) and "species" in frame.columns
    assert info == {**info, "source": "sklearn", "name": "load_iris", "rows": 150}
    with pytest.raises(DataError, match="loader 'load_irs'; choose one of .*'load_iris'"):
        data.load_sklearn_frame("load_irs", target="species")


# ---- the fetch stage on registry entries: a bad source stops with the entry and the problem
# named, a non-zero exit, and nothing written


def fetch(project, name: str, entry: str | None = None):
    import subprocess

    from conftest import tool_env

    empty = "split: {}, preprocess: {}, train: {}, evaluate: {}, baselines: {}"
    sets = ["--set", f"datasets.{name}={{data: {entry}, {empty}}}"] if entry else []
    return subprocess.run(
        ["tandem", "fetch", "--dataset", name, *sets], cwd=project, env=tool_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("{source: file, path: data/sources/file/nope.csv, target: y, task: classification}",
         "data/sources/file/nope.csv does not exist"),
        ("{source: file, path: data/sources/file/rows.csv, target: nope, task: classification}",
         "has no target column 'nope'"),
        ("{source: images, path: data/sources/images/empty, target: y, task: classification, "
         "modality: image, image_shape: [8, 8]}", "holds no .png/.jpg/.jpeg images"),
        ("{source: images, path: data/sources/images/broken, target: y, task: classification, "
         "modality: image, image_shape: [8, 8]}", "is not a readable image"),
        ("{source: images, path: data/sources/images/tiny, target: y, task: classification, "
         "modality: image, image_shape: [4, 4], channels: 1}", None),
    ],
)  # fmt: skip
def test_a_bad_source_names_the_entry_and_writes_nothing(project, entry, named):
    (project / "data/sources/file").mkdir(parents=True)
    pd.DataFrame({"a": [1, 2], "y": [0, 1]}).to_csv(project / "data/sources/file/rows.csv")
    for kind in ("empty", "broken", "tiny"):
        for label in ("a", "b"):
            (project / f"data/sources/images/{kind}/{label}").mkdir(parents=True)
    (project / "data/sources/images/broken/a/x.png").write_bytes(b"not a png")
    for label in ("a", "b"):
        Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(
            project / f"data/sources/images/tiny/{label}/i.png"
        )
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(
        project / "data/sources/images/broken/b/ok.png"
    )
    proc = fetch(project, "mine", entry)
    if named is None:  # the control: a good folder (resized 8x8 -> 4x4) is read
        assert proc.returncode == 0, proc.stderr
        assert pd.read_parquet(project / "data/mine/raw.parquet").shape == (2, 17)
        return
    assert proc.returncode == 1, proc.stderr
    message = one_line(proc.stderr)
    assert "error in stage fetch (data set mine)" in message and named in message
    assert "Traceback" not in proc.stderr
    assert not (project / "data/mine").exists()


def test_an_unknown_source_or_a_path_outside_the_sources_folder_is_refused(project):
    proc = fetch(project, "mine", "{source: ftp, target: y, task: classification}")
    assert proc.returncode == 2 and "datasets.mine.data.source" in proc.stderr
    proc = fetch(project, "mine", "{source: file, path: rows.csv, target: y, task: regression}")
    assert proc.returncode == 2
    assert "datasets.mine" in proc.stderr and "must lie under data/sources/file/" in proc.stderr
    assert not (project / "data").exists()


def test_an_image_entry_whose_columns_do_not_fit_its_shape_is_refused(project):
    proc = fetch(project, "digits", "{source: sklearn, name: load_digits, target: digit, "
                 "task: classification, modality: image, image_shape: [16, 16]}")  # fmt: skip
    assert proc.returncode == 1
    assert "datasets.digits: 64 feature columns, but image_shape [16, 16]" in one_line(proc.stderr)
    assert not (project / "data/digits").exists()
    good = fetch(project, "digits", "{source: sklearn, name: load_digits, target: digit, "
                 "task: classification, modality: image, image_shape: [8, 8]}")  # fmt: skip
    assert good.returncode == 0, good.stderr
    provenance = __import__("json").loads((project / "data/digits/raw.json").read_text())
    assert provenance == {**provenance, "source": "sklearn", "rows": 1797, "columns": 65}


def test_dvc_sees_the_sources_a_user_adds(tmp_path):
    """DVC does not look for .dvc files under a git-ignored folder (it removed a `dvc add`ed image
    folder as an "unused link" at the next `dvc checkout` / `dvc exp run` when data/ was ignored):
    the project's .gitignore must leave data/sources/ visible."""
    import subprocess

    from conftest import copy_project, tool_env
    from dvc.repo import Repo

    repo = copy_project(tmp_path / "repo", clean=True)
    env = tool_env(DVC_NO_ANALYTICS="1")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    folder = repo / "data/sources/images/mine/a"
    folder.mkdir(parents=True)
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(folder / "i.png")
    subprocess.run(["dvc", "add", "-q", "data/sources/images/mine"], cwd=repo, check=True, env=env)
    outs = {str(o) for stage in Repo(str(repo)).index.stages for o in stage.outs}
    assert "data/sources/images/mine" in outs  # else checkout removes it as an unused link
