"""The `tandem` CLI: params refused before anything is written; a stage run alone."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
from conftest import tool_env


def tandem(args, cwd):
    return subprocess.run(
        ["tandem", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300
    )


def test_unknown_key_is_refused_by_name_and_nothing_is_written(project):
    proc = tandem(["train", "--set", "train.no_such_key=1"], project)
    assert proc.returncode != 0
    assert "train.no_such_key" in proc.stderr
    assert not (project / "models").exists() and not (project / "metrics").exists()
    proc = tandem(["split", "--set", "split.test_size=2"], project)
    assert proc.returncode != 0 and "split.test_size" in proc.stderr


def test_missing_input_is_named(project):
    proc = tandem(["split"], project)
    assert proc.returncode == 1
    assert "data/raw/usps.parquet" in proc.stderr


def test_train_stage_alone_on_small_features(project):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 256)).astype("float32")
    y = np.where(X[:, 0] > 0, "1", "2")
    frame = pd.DataFrame(X, columns=[f"int{i}" for i in range(256)]).assign(**{"class": y})
    (project / "data" / "features").mkdir(parents=True)
    frame.to_parquet(project / "data" / "features" / "train.parquet", index=False)
    proc = tandem(
        ["train", "--set", "train.module=mlp", "--set", "train.max_epochs=2",
         "--set", "train.lr_schedule=null"],
        project,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for path in (
        "models/model/config.json",
        "models/model/weights.safetensors",
        "metrics/train.json",
        "dvclive/metrics.json",
        "dvclive/plots/metrics/train_loss.tsv",
    ):
        assert (project / path).is_file(), path  # fmt: skip
    rows = (project / "dvclive/plots/metrics/train_loss.tsv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch


def test_check_command(project):
    assert tandem(["check"], project).returncode == 0
    bad = tandem(["check", "--set", "train.optimizer=adamx"], project)
    assert bad.returncode == 2 and "train.optimizer" in bad.stderr


def test_check_finds_dvc_yaml_and_params_disagreeing(project):
    import yaml

    dvc = yaml.safe_load((project / "dvc.yaml").read_text())
    dvc["stages"]["split"]["params"].append("split.no_such_key")  # declared, not in params.yaml
    dvc["stages"]["evaluate"]["params"].remove("evaluate")  # read by the stage, not declared
    dvc["stages"]["tabular-train"]["do"]["params"].append("tabular.datasets.${key}.nope")
    (project / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    proc = tandem(["check"], project)
    assert proc.returncode == 2
    assert "stage split: params key 'split.no_such_key' is not in params" in proc.stderr
    assert "stage evaluate: dvc.yaml declares params" in proc.stderr
    assert "stages/evaluate.py reads" in proc.stderr
    for name in ("adult", "cpu"):  # foreach is expanded over tabular.datasets
        assert f"'tabular.datasets.{name}.nope' is not in params" in proc.stderr
