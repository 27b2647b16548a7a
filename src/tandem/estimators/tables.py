"""The one table of what an estimator's names stand for: routed prefixes, optimizers, criteria,
schedules and augmentations. The estimator builds from it, and search and tune check a search
space against it, so a name means the same everywhere."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tandem import models
from tandem.models import nearest_hint

# constructor arguments routed by double underscore: module__hidden_sizes, optimizer__weight_decay
ROUTED_PREFIXES = ("module", "optimizer", "criterion", "lr_schedule", "augment")
AUGMENTS = ("affine",)  # augment="affine": training.Augment with the augment__* ranges

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
CRITERIA: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "huber": nn.HuberLoss,
    "smooth_l1": nn.SmoothL1Loss,
}
SCHEDULES: dict[str, type] = {
    "onecycle": torch.optim.lr_scheduler.OneCycleLR,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
}
# arguments of each routed prefix that tandem passes itself, never taken from the user
SUPPLIED = {
    "module": {"n_features", "n_outputs"},
    "optimizer": {"self", "params", "lr"},
    "criterion": {"self", "reduction", "size_average", "reduce"},
    "lr_schedule": {"self", "optimizer", "max_lr", "total_steps", "T_max"},
}
TABLES: dict[str, dict[str, Any]] = {
    "optimizer": OPTIMIZERS,
    "criterion": CRITERIA,
    "lr_schedule": SCHEDULES,
}


def choose(kind: str, value: Any, table: dict[str, Any] | None = None) -> Any:
    """The class a name of ``kind`` stands for (a class or callable passes as it is); an unknown
    name is refused with the valid ones and the nearest."""
    table = TABLES[kind] if table is None else table
    if not isinstance(value, str):
        return value
    if models.is_reference(value):  # the project's own class: nets/FILE.py:Class
        return models.import_reference(value)
    if value not in table:
        raise ValueError(
            f"Unknown {kind} {value!r}; choose one of {sorted(table)} or pass a class."
            + nearest_hint(value, list(table))
        )
    return table[value]
