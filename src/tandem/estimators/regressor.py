"""TorchRegressor: single or multi-output regression, with the target's scaler saved beside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import RegressorMixin

from tandem import training
from tandem.estimators.base import TorchEstimatorBase

TARGET_SCALER_FILE = "target_scaler.skops"  # a regressor's target transformer, in its directory


class TorchRegressor(RegressorMixin, TorchEstimatorBase):
    """A torch module as an sklearn regressor (single or multi-output).

    Scale the target (e.g. with ``TransformedTargetRegressor``) when it is far from unit scale.
    """

    _default_criterion = "mse"
    _score_name = "r2"
    _stratify = False
    _y_dtype = torch.float32
    _y_validation: dict = {"multi_output": True, "y_numeric": True}
    _score_fn = staticmethod(training.r2)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_y(self, y, *, first: bool, classes=None) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if first:
            self._y_ndim = y.ndim
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(
                f"y has a different number of outputs than the {self.n_outputs_} fitted"
            )
        return y.reshape(y.shape[0], self.n_outputs_)

    def partial_fit(self, X, y, sample_weight=None):
        """One more epoch over (X, y)."""
        return self._fit(X, y, sample_weight, partial=True)

    def predict(self, X) -> np.ndarray:
        out = self._raw(X).double().cpu().numpy()
        return out.ravel() if self._y_ndim == 1 else out

    def save(self, path: str | Path, target_scaler: Any = None) -> Path:
        """``save``, plus the fitted transformer of the target when the module learnt a scaled
        one (``TransformedTargetRegressor.transformer_``): it is stored inside the model
        directory, and the config records whether there is one, so that a lost file is an error
        on loading rather than predictions silently left in scaled units."""
        if target_scaler is None:
            return self._save(path, target_scaler=None)
        return self._save(
            path, {TARGET_SCALER_FILE: target_scaler}, target_scaler=TARGET_SCALER_FILE
        )

    @staticmethod
    def load_target_scaler(path: str | Path) -> Any:
        """The target transformer saved with the model at ``path``, or None if it has none."""
        from tandem.features import load_transformer

        config_file = Path(path) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "target_scaler" not in config:
            raise ValueError(
                f"{config_file} does not record whether the model learnt a scaled target "
                "(saved by an older tandem): train it again"
            )
        if config["target_scaler"] is None:
            return None
        name = config["target_scaler"]
        if name != TARGET_SCALER_FILE:  # a file of the model's own folder, never a path out
            raise ValueError(
                f"{config_file}: target_scaler must be {TARGET_SCALER_FILE!r} (a file inside the "
                f"model folder); got {str(name)[:100]!r}"
            )
        scaler_file = Path(path) / name
        if not scaler_file.is_file():
            raise FileNotFoundError(
                f"{scaler_file} is missing: the model predicts a scaled target and cannot be "
                "used without it; train it again"
            )
        return load_transformer(scaler_file)

    def _extra_config(self) -> dict:
        return {"y_ndim": self._y_ndim}

    def _restore_extra(self, config: dict) -> None:
        self._y_ndim = int(config["y_ndim"])
