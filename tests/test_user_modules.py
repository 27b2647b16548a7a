"""The project's own network: ``train.module: nets/FILE.py:Class`` (or ``package.module:Class``)
is built like a built-in module, saved and loaded by reference, checked by `tandem check` and the
train stage before anything is written, and its file's hash is in the entry's recipe."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import yaml
from conftest import usps_like
from test_cli import tandem

from tandem import TorchClassifier, models
from tandem.config import ParamsError, recipe, validate

TINY = textwrap.dedent('''
    from torch import nn


    class TinyNet(nn.Module):
        """Two layers; takes what the train stage passes an image entry's module."""

        def __init__(self, n_features, n_outputs, width=8, image_shape=None, in_channels=1):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(n_features, width), nn.ReLU(),
                                        nn.Linear(width, n_outputs))

        def forward(self, x):
            return self.layers(x)


    class NeedsDepth(nn.Module):
        def __init__(self, n_features, n_outputs, depth):
            super().__init__()


    helper = 3
''')
REF = "nets/tiny.py:TinyNet"


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets/tiny.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_reference_builds_trains_saves_and_loads(in_project):
    X = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    est = TorchClassifier(module=REF, module__width=5, max_epochs=2, random_state=0).fit(X, y)
    assert type(est.module_).__name__ == "TinyNet" and est.module_.layers[0].out_features == 5
    est.save(in_project / "m")
    again = TorchClassifier.load(in_project / "m")  # the reference, imported again
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    assert models.module_arguments(REF) == ["width", "image_shape", "in_channels"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nets/none.py:TinyNet", "no file nets/none.py in the project"),
        ("nets/tiny.py:Missing", r"such name; its nn.Module classes: \['NeedsDepth', 'TinyNet'\]"),
        ("nets/tiny.py:helper", "helper is a int, not an nn.Module class"),
        ("../tiny.py:TinyNet", "no file ../tiny.py in the project"),
        ("no_such_package.mod:Net", "cannot import no_such_package.mod"),
    ],
)  # fmt: skip
def test_a_bad_reference_is_named(in_project, reference, message):
    with pytest.raises(ValueError, match=message):
        models.import_reference(reference)


def test_arguments_that_do_not_fit_are_refused_before_building(in_project):
    models.check_arguments(REF, ["n_features", "n_outputs", "width"])
    with pytest.raises(ValueError, match=r"it takes no \['depth'\]"):
        models.check_arguments(REF, ["n_features", "n_outputs", "depth"])
    with pytest.raises(ValueError, match=r"it needs \['depth'\]"):
        models.check_arguments("nets/tiny.py:NeedsDepth", ["n_features", "n_outputs"])
    with pytest.raises(ValueError, match=r"it needs \['in_features', 'out_features'\]"):
        models.check_arguments("torch.nn:Linear", ["n_features", "n_outputs"])


def test_the_recipe_holds_the_files_hash_and_files_live_under_nets(in_project):
    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["adult"]["train"] = {"module": "models/tiny.py:TinyNet"}
    with pytest.raises(ParamsError, match="a module file lives under nets/"):
        validate(raw)
    raw["datasets"]["adult"]["train"] = {"module": REF, "module_kwargs": {REF: {"width": 4}}}
    params = validate(raw)
    first = recipe(params, "adult", "train").as_dict()
    assert first["module_kwargs"] == {REF: {"width": 4}} and len(first["module_sha256"]) == 64
    (in_project / "nets/tiny.py").write_text(TINY + "\n# edited\n")
    assert recipe(params, "adult", "train").module_sha256 != first["module_sha256"]
    assert "module_sha256" not in recipe(params, "titanic", "train").as_dict()


def test_check_and_the_train_stage_refuse_a_module_that_does_not_fit(project):
    (project / "nets").mkdir()
    (project / "nets/tiny.py").write_text(TINY)
    usps_like(120, at=(project / "data/usps/features_train.parquet",))
    ok = tandem(["check", "--set", f"datasets.usps.train.module={REF}"], project)
    assert ok.returncode == 0, ok.stderr
    bad = ["--set", "datasets.usps.train.module=nets/tiny.py:NeedsDepth"]
    refused = tandem(["check", *bad], project)
    assert refused.returncode == 2
    assert "datasets.usps.train.module: module 'nets/tiny.py:NeedsDepth'" in refused.stderr
    assert "it needs ['depth']" in refused.stderr
    stage = tandem(["train", "--dataset", "usps", *bad], project)
    assert stage.returncode != 0 and "it needs ['depth']" in stage.stderr
    assert not (project / "models").exists()  # nothing written
    trained = tandem(["train", "--dataset", "usps", "--set", f"datasets.usps.train.module={REF}",
                      "--set", "datasets.usps.train.max_epochs=1"], project)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = yaml.safe_load((project / "models/usps/model/config.json").read_text())
    assert config["module_spec"] == REF and config["params"]["module__image_shape"] == [16, 16]


LOSS = textwrap.dedent('''
    import torch
    from torch import nn


    class Focal(nn.Module):
        """Focal loss per row (gamma 2): built by tandem with reduction='none'."""

        def __init__(self, reduction="none", gamma=2.0):
            super().__init__()
            self.gamma = gamma

        def forward(self, logits, y):
            log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
            return -((1 - log_p.exp()) ** self.gamma) * log_p


    class NoReduction(nn.Module):
        def forward(self, logits, y):
            return logits.sum()
''')


def test_the_projects_own_loss_by_reference(in_project, project):
    """``criterion="nets/losses.py:Focal"``: the estimator builds it per row, the recipe hashes
    its file, and the train stage refuses a loss that cannot take reduction='none'."""
    (in_project / "nets/losses.py").write_text(LOSS)
    X = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    kw = dict(max_epochs=2, random_state=0, validation_fraction=0.25)
    focal = TorchClassifier(criterion="nets/losses.py:Focal", criterion__gamma=2.0, **kw).fit(X, y)
    plain = TorchClassifier(**kw).fit(X, y)
    assert focal.history_[-1]["valid_loss"] < plain.history_[-1]["valid_loss"]  # focal is smaller
    (project / "nets").mkdir()
    (project / "nets/losses.py").write_text(LOSS)
    usps_like(120, at=(project / "data/usps/features_train.parquet",))
    bad = ["--set", "datasets.usps.train.criterion=nets/losses.py:NoReduction"]
    refused = tandem(["train", "--dataset", "usps", *bad], project)
    assert refused.returncode != 0
    assert "train.criterion: 'nets/losses.py:NoReduction' cannot be built" in refused.stderr
    smoothed = tandem(["check", "--set", "datasets.usps.train.criterion=nets/losses.py:Focal",
                       "--set", "train.label_smoothing=0.1"], project)  # fmt: skip
    assert smoothed.returncode == 2 and "label_smoothing=0.1 is cross-entropy's" in smoothed.stderr
    ok = ["--set", "datasets.usps.train.criterion=nets/losses.py:Focal",
          "--set", "datasets.usps.train.max_epochs=1"]  # fmt: skip
    trained = tandem(["train", "--dataset", "usps", *ok], project)
    assert trained.returncode == 0, trained.stderr
