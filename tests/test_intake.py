"""Bad data stops at fetch (or, for what only a split can tell, at split), with the column, the
count and the fix named, and nothing written: a few unparseable cells in a numeric column, a
header-only file, missing or infinite targets, infinite features, a class of one row, and
sources that resolve outside data/sources/ (symbolic links)."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

ENTRY = ("datasets.mine={data: {source: file, path: data/sources/file/mine.csv, target: y, "
         "task: classification%s}, split: {}, preprocess: {}, train: {}, evaluate: {}, "
         "baselines: {}}")  # fmt: skip


def stage(project, monkeypatch, name: str, extra: str = ""):
    from tandem import cli

    monkeypatch.chdir(project)
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    result = CliRunner().invoke(cli.app, [name, "--dataset", "mine", "--set", ENTRY % extra])
    return result.exit_code, " ".join(re.sub(r"\x1b\[[0-9;]*m", "", result.output).split())


def table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": np.where(x > 0, "a", "b")})


def write(project, frame: pd.DataFrame | str) -> None:
    path = project / "data/sources/file/mine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(frame) if isinstance(frame, str) else frame.to_csv(path, index=False)


def nothing_fetched(project) -> bool:
    return not (project / "data/mine").exists()


def test_a_few_bad_cells_in_a_numeric_column_are_named_not_made_a_category(project, monkeypatch):
    frame = table().astype({"x": object})
    frame.loc[[3, 7], "x"] = ["oops", "n/a?"]
    write(project, frame)
    code, out = stage(project, monkeypatch, "fetch")
    assert code == 1 and nothing_fetched(project)
    assert "column 'x' looks numeric but 2 of 60 cells are not numbers" in out
    assert "'oops'" in out and "data.dtypes: {x: numeric}" in out
    # declared numeric: the bad cells become missing values, the column stays a number
    code, out = stage(project, monkeypatch, "fetch", ", dtypes: {x: numeric}")
    assert code == 0, out
    raw = pd.read_parquet(project / "data/mine/raw.parquet")
    assert raw["x"].dtype == np.float64 and raw["x"].isna().sum() == 2


def test_a_header_only_file_stops_at_fetch(project, monkeypatch):
    write(project, "x,z,y\n")
    code, out = stage(project, monkeypatch, "fetch")
    assert code == 1 and "has no rows" in out and nothing_fetched(project)


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [("y", None, "target column 'y' has 1 missing values of 60 rows"),
     ("z", np.inf, "column 'z' has 1 infinite values")],
)  # fmt: skip
def test_missing_targets_and_infinite_features_stop_at_fetch(project, monkeypatch, column, value,
                                                             named):  # fmt: skip
    frame = table()
    frame.loc[5, column] = value
    write(project, frame)
    code, out = stage(project, monkeypatch, "fetch")
    assert code == 1 and named in out and nothing_fetched(project), out


def test_an_infinite_regression_target_stops_at_fetch(project, monkeypatch):
    frame = table().assign(y=lambda f: f["x"] * 2)
    frame.loc[2, "y"] = -np.inf
    write(project, frame)
    from tandem import cli

    monkeypatch.chdir(project)
    entry = (ENTRY % "").replace("classification", "regression")
    result = CliRunner().invoke(cli.app, ["fetch", "--dataset", "mine", "--set", entry])
    assert result.exit_code == 1 and "target column 'y' has 1 infinite values" in " ".join(
        result.output.split()
    )


def test_a_class_of_one_row_is_named_at_split(project, monkeypatch):
    frame = table()
    frame.loc[9, "y"] = "lonely"
    write(project, frame)
    assert stage(project, monkeypatch, "fetch")[0] == 0
    code, out = stage(project, monkeypatch, "split")
    assert code == 1 and "class(es) ['lonely'] have a single row" in out
    assert "drop those rows" in out and not (project / "data/mine/train.parquet").exists()


def test_a_link_out_of_the_sources_folder_is_refused_without_reading_it(project, monkeypatch,
                                                                        tmp_path):  # fmt: skip
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    link = project / "data/sources/file/mine.csv"
    link.parent.mkdir(parents=True)
    os.symlink(secret, link)
    code, out = stage(project, monkeypatch, "fetch")
    assert code == 1 and "resolves to a place outside data/sources/" in out
    assert "root:x" not in out and nothing_fetched(project)


def test_an_image_folder_linked_from_outside_is_refused(project, monkeypatch, tmp_path):
    from tandem import data

    outside = tmp_path / "digits"
    for label in ("a", "b"):
        (outside / label).mkdir(parents=True)
    inside = project / "data/sources/images"
    inside.mkdir(parents=True)
    os.symlink(outside, inside / "digits")
    monkeypatch.chdir(project)
    with pytest.raises(data.DataError, match="outside data/sources/"):
        data.read_image_folder("data/sources/images/digits", shape=(8, 8), channels=1,
                               target="c", root=data.SOURCES)  # fmt: skip
