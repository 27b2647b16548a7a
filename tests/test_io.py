"""Atomic outputs and safe reads."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from tandem import io as tio


def test_write_json_creates_parents_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics" / "deep" / "eval.json"
    tio.write_json(target, {"accuracy": 0.1 + 0.2, "n": np.int64(3), "v": np.float32(0.5)})
    assert json.loads(target.read_text()) == {"accuracy": 0.1 + 0.2, "n": 3, "v": 0.5}
    tio.write_json(target, {"accuracy": 1.0})
    assert json.loads(target.read_text()) == {"accuracy": 1.0}
    assert [p.name for p in target.parent.iterdir()] == ["eval.json"]
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & 0o044  # readable by others, like an ordinary file, not mkstemp's 0600


def test_write_json_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "eval.json"
    tio.write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        tio.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    tio.write_json(target, {"nan": float("nan"), "arr": np.arange(2)})
    assert json.loads(target.read_text()) == {"nan": None, "arr": [0, 1]}


def test_read_parquet_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        tio.read_parquet(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        tio.read_parquet(bad)
    good = tmp_path / "good.parquet"
    tio.write_parquet(good, pd.DataFrame({"a": [1, 2]}))
    assert tio.read_parquet(good)["a"].tolist() == [1, 2]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with tio.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with tio.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("killed half-way")
    assert (target / "a.txt").read_text() == "one"  # the old folder, untouched
    (tmp_path / ".model.abc123.tmp").mkdir()  # what a SIGKILLed process would leave
    with tio.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["b.txt"]
