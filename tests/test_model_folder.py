"""A model folder is checked before anything is built: the network its config.json describes
must be the one its weights file holds (names and shapes, compared on torch's meta device, so
an edited config costs no memory), and every file it names lies inside the folder."""

from __future__ import annotations

import json
import resource
import time

import numpy as np
import pytest

from tandem import TorchClassifier, TorchRegressor


@pytest.fixture
def folder(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    TorchClassifier(module__hidden_sizes=(8,), max_epochs=1, random_state=0).fit(X, y).save(
        tmp_path / "m"
    )
    return tmp_path / "m"


def edit(folder, **params):
    config = json.loads((folder / "config.json").read_text())
    config["params"] |= params
    (folder / "config.json").write_text(json.dumps(config))


def test_a_huge_network_in_an_edited_config_is_refused_before_allocation(folder):
    edit(folder, module__hidden_sizes=[40000, 40000])  # 6.4 GB of float32 weights
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match="describes another network than weights.safetensors"):
        TorchClassifier.load(folder)
    assert time.perf_counter() - start < 5
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 200, grown_mb


def test_arguments_that_build_no_network_are_named(folder):
    edit(folder, module__hidden_sizes=[-3])
    with pytest.raises(ValueError, match=r"config.json: its params do not build a network"):
        TorchClassifier.load(folder)


def test_a_target_scaler_outside_the_model_folder_is_refused(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[:, :1])
    TorchRegressor(module__hidden_sizes=(4,), max_epochs=1, random_state=0).fit(
        X, X[:, 0]
    ).save(tmp_path / "m", target_scaler=scaler)
    config = json.loads((tmp_path / "m/config.json").read_text())
    config["target_scaler"] = "../../elsewhere/scaler.skops"
    (tmp_path / "m/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="a file inside the model folder"):
        TorchRegressor.load_target_scaler(tmp_path / "m")
