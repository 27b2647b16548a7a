"""One source of defaults: every setting of params.yaml's train section that the estimator also
has is either the estimator's own default, or listed in docs/data.md's table of the defaults
that differ, with the reason. A changed default on either side fails here until the table says
why (or the two agree again)."""

from __future__ import annotations

import inspect
import re

from conftest import ROOT

from tandem import TorchClassifier, models
from tandem.config import load_params

# train key -> (the estimator's param it sets, how to read the estimator's default)
ESTIMATOR = TorchClassifier().get_params()
MLP = {k: p.default for k, p in inspect.signature(models.mlp).parameters.items()
       if p.default is not inspect.Parameter.empty}  # fmt: skip


def pairs() -> dict[str, tuple[object, object]]:
    """train key -> (params.yaml's shared value, the library's default)."""
    train = load_params(ROOT / "params.yaml").train
    mlp = train.module_kwargs.get("mlp", {})
    return {
        "optimizer": (train.optimizer, ESTIMATOR["optimizer"]),
        "lr": (train.lr, ESTIMATOR["lr"]),
        "batch_size": (train.batch_size, ESTIMATOR["batch_size"]),
        "max_epochs": (train.max_epochs, ESTIMATOR["max_epochs"]),
        "patience": (train.patience, ESTIMATOR["patience"]),
        "validation_fraction": (train.validation_fraction, ESTIMATOR["validation_fraction"]),
        "lr_schedule": (train.lr_schedule, ESTIMATOR["lr_schedule"]),
        "device": (train.device, ESTIMATOR["device"]),
        "amp": (train.amp, ESTIMATOR["amp"]),
        "compile": (train.compile, ESTIMATOR["compile"]),
        "augment": (train.augment, ESTIMATOR["augment"]),
        "ema": (train.ema, ESTIMATOR["ema"]),
        "seed": (train.seed, ESTIMATOR["random_state"]),
        "init_weights": (train.init_weights, ESTIMATOR["init_weights"]),
        "freeze": (train.freeze, ESTIMATOR["freeze"]),
        "weight_decay": (train.weight_decay, 0.0),  # Adam's, the estimator's optimizer
        "label_smoothing": (train.label_smoothing, 0.0),  # CrossEntropyLoss's
        "module_kwargs.mlp.hidden_sizes": (
            tuple(mlp.get("hidden_sizes", ())),
            tuple(MLP["hidden_sizes"]),
        ),  # fmt: skip
        "module_kwargs.mlp.dropout": (mlp.get("dropout"), MLP["dropout"]),
    }


def documented() -> set[str]:
    """The keys of docs/data.md's table of defaults that differ (first column, in backticks)."""
    text = (ROOT / "docs/data.md").read_text()
    section = text.split("### Where the library's defaults differ", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))


def test_every_default_that_differs_is_documented_with_its_reason():
    differ = {key for key, (ours, library) in pairs().items() if ours != library}
    assert differ == documented(), differ ^ documented()
