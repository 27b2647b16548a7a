"""TorchClassifier: labels in, labels out; the module sees class indices."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from tandem import training
from tandem.estimators.base import TorchEstimatorBase


class TorchClassifier(ClassifierMixin, TorchEstimatorBase):
    """A torch module as an sklearn classifier: labels in, labels out.

    ``classes_`` keeps the caller's labels (strings stay strings); the module sees class indices
    and outputs one logit per class. ``predict_proba`` is the softmax of the logits.
    """

    _default_criterion = "cross_entropy"
    _score_name = "accuracy"
    _stratify = True
    _y_dtype = torch.long
    _y_validation: dict = {}
    _score_fn = staticmethod(training.accuracy)

    def _encode_y(self, y, *, first: bool, classes=None) -> np.ndarray:
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"TorchClassifier supports binary and multiclass targets, not {kind}")
        if first:
            self.classes_ = np.unique(y) if classes is None else np.unique(classes)
            if len(self.classes_) < 2 and classes is None:
                raise ValueError(
                    f"TorchClassifier needs samples of at least 2 classes; got one class "
                    f"{self.classes_[0]!r}"
                )
            self.n_outputs_ = len(self.classes_)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={classes!r} differs from the fitted classes_ {self.classes_!r}"
            )
        missing = np.setdiff1d(y, self.classes_)
        if missing.size:
            raise ValueError(f"y contains labels not in classes_: {missing[:5].tolist()}")
        return np.searchsorted(self.classes_, y)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One more epoch over (X, y). The first call needs ``classes`` unless y holds them all."""
        return self._fit(X, y, sample_weight, partial=True, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(self._raw(X).double(), dim=1).cpu().numpy()

    def predict_proba_tta(self, X) -> np.ndarray:
        """Test-time augmentation: class probabilities averaged over the image and its one-pixel
        shifts (``models.TTA_VIEWS``). Rows are images of the shape ``_image_shape`` says."""
        check_is_fitted(self, "module_")
        X = self._validate_X(X, reset=False)
        shape = self.image_shape(X.shape[1])
        proba = training.predict_tta(self.module_, self._tensor(X, torch.float32), shape)
        return proba.cpu().numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        return torch.log_softmax(self._raw(X).double(), dim=1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        index = self._raw(X).argmax(dim=1).cpu().numpy()
        return self.classes_[index]

    def _extra_config(self) -> dict:
        return {"classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str}

    def _restore_extra(self, config: dict) -> None:
        dtype = np.dtype(config["classes_dtype"])
        if dtype.kind not in "biufUO":
            raise ValueError(f"unsupported classes dtype {dtype} in model config")
        self.classes_ = np.asarray(config["classes"], dtype=dtype)
