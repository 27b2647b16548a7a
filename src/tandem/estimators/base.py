"""The sklearn surface: constructor params and their routing, validation, ``fit`` and
``partial_fit`` (one preparation, then the loop of ``loop.TrainingSteps``), raw predictions."""

from __future__ import annotations

import numbers
import os
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from tandem import data, training
from tandem.estimators import ddp
from tandem.estimators.building import Building
from tandem.estimators.checkpoint import Checkpoint, fingerprint
from tandem.estimators.loop import LoopState, Run, TrainingSteps
from tandem.estimators.persistence import Persistence
from tandem.estimators.tables import ROUTED_PREFIXES
from tandem.models import nearest_hint


class TorchEstimatorBase(Building, TrainingSteps, Persistence, BaseEstimator):
    """Shared machinery of TorchClassifier and TorchRegressor: a subclass overrides the loop's
    steps (``get_loss``, ``train_step``, ...) or the ``build_*`` methods to change one part."""

    _default_criterion = "mse"
    _score_name = "score"

    def __init__(
        self,
        module: Any = "mlp",
        *,
        criterion: Any = None,
        optimizer: Any = "adam",
        lr: float = 1e-3,
        batch_size: int = 128,
        max_epochs: int = 20,
        patience: int | None = None,
        validation_fraction: float = 0.1,
        lr_schedule: str | None = None,
        device: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
        compile: bool = False,
        amp: bool = False,
        checkpoint: str | None = None,
        augment: str | None = None,
        ema: float | None = None,
        init_weights: str | None = None,
        freeze: list[str] | None = None,
        **kwargs: Any,
    ):
        self.module = module
        self.criterion = criterion
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.lr_schedule = lr_schedule
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.compile = compile
        self.amp = amp
        self.checkpoint = checkpoint
        self.augment = augment
        self.ema = ema
        self.init_weights = init_weights
        self.freeze = freeze
        self._routed = dict(kwargs)

    # ------------------------------------------------------------------ params and routing
    @classmethod
    def _check_routed(cls, kwargs: dict[str, Any]) -> None:
        """Refuse extra keyword arguments that are not ``<prefix>__<name>`` for a known prefix."""
        names = cls._get_param_names()
        for key in kwargs:
            prefix, sep, rest = key.partition("__")
            if sep and rest and prefix in ROUTED_PREFIXES:
                continue
            if sep:
                hint = nearest_hint(prefix, list(ROUTED_PREFIXES))
                raise ValueError(
                    f"Invalid parameter {key!r} for {cls.__name__}: {prefix!r} is not a routed "
                    f"prefix (valid: {', '.join(p + '__' for p in ROUTED_PREFIXES)}).{hint}"
                )
            raise ValueError(
                f"Invalid parameter {key!r} for {cls.__name__}. Valid parameters: {names}."
                + nearest_hint(key, names)
            )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update(self._routed)
        return params

    def set_params(self, **params: Any):
        """Set parameters; a misspelt routed prefix (``modul__x``) is refused at once.

        Like ``__init__``, other unknown names are kept and refused by ``fit`` (scikit-learn's
        rule: constructing and setting parameters never fails on values).
        """
        names = self._get_param_names()
        routed = {k: v for k, v in params.items() if k not in names}
        self._check_routed({k: v for k, v in routed.items() if "__" in k})
        self._routed = {**self._routed, **routed}
        for key, value in params.items():
            if key in names:
                setattr(self, key, value)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ data
    def _validate_X(self, X, *, reset: bool, y: Any = "no_validation", **kwargs):
        """float32 features (sparse input is densified); y too when given."""
        kw = dict(accept_sparse=("csr", "csc", "coo"), dtype=np.float32, reset=reset, **kwargs)
        try:
            out = validate_data(self, X, y, **kw)
        except ValueError as exc:
            raise ValueError(f"{exc}{_bad_columns(X)}") from None
        X, y = out if isinstance(out, tuple) else (out, None)
        if sp.issparse(X):
            X = X.toarray()
        return X if y is None else (X, y)

    def _tensor(self, a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """The array on the device, copied once; to a GPU from pinned (page-locked) memory."""
        if self.device_.type != "cuda":
            return torch.tensor(np.asarray(a), dtype=dtype, device=self.device_)
        host = torch.tensor(np.asarray(a), dtype=dtype).pin_memory()  # a copy: any numpy array
        return host.to(self.device_, non_blocking=True)

    def _batch(self, X, y_enc, w, idx) -> training.Batch:
        return training.Batch(
            X=self._tensor(X[idx], torch.float32),
            y=self._tensor(y_enc[idx], self._y_dtype),
            w=self._tensor(w[idx], torch.float32),
        )

    def _fit_data(self, X, y, sample_weight, *, first: bool, classes=None):
        """Validated float32 rows, encoded targets and non-negative sample weights."""
        X, y = self._validate_X(X, y=y, reset=first, **self._y_validation)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float32)
        if np.any(sample_weight < 0):
            raise ValueError("sample_weight must be non-negative")
        return X, self._encode_y(y, first=first, classes=classes), sample_weight

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Train a fresh module on (X, y); a validation slice is held out when configured."""
        return self._fit(X, y, sample_weight, partial=False)

    def _fit(self, X, y, sample_weight, *, partial: bool, classes=None):
        first = not (partial and hasattr(self, "module_"))
        if first:
            check_hyperparams(self)
        X, y_enc, weights = self._fit_data(X, y, sample_weight, first=first, classes=classes)
        if partial and self.ema is not None:
            raise ValueError("ema averages the weights over a whole fit; partial_fit cannot use it")
        augment = self.build_augment(X.shape[1])
        if first:
            self.device_ = training.resolve_device(self.device)
            self._seed = seed = training.seed_from(self.random_state)
        else:
            seed = training.seed_from(self._seed + len(self.history_))
        dist = ddp.start(X.shape[0], self.batch_size, self.device_)  # None outside torchrun
        devices = [self.device_] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            run, state, store = self._prepare(X, y_enc, weights, first=first, partial=partial,
                                              seed=seed, dist=dist, augment=augment)  # fmt: skip
            start = time.perf_counter()
            state = self.run_epochs(run, state)
            if store is not None and training.is_main_process():
                store.finish()
        self.module_.eval()
        self.history_ = (self.history_ if not first else []) + state.history
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = state.best_epoch if state.best_epoch is not None else self.n_iter_
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _prepare(self, X, y_enc, weights, *, first: bool, partial: bool, seed: int, dist, augment):
        """The fit's ``Run`` and the ``LoopState`` it starts from (a checkpoint's, when one is
        resumed), and the checkpoint store or None. Draws from torch's RNG in a fixed order:
        the module's initialisation first."""
        if first:
            self.module_ = self._place(self.build_module(X.shape[1], self.n_outputs_))
            self.transfer_ = self.start_from_weights(self.module_)
        if first or self.optimizer_ is None:  # None: a loaded model trains on
            self.optimizer_ = self.build_optimizer(self.module_)
        if partial:  # partial_fit: one pass over all of the data given
            train_idx, valid_idx = np.arange(X.shape[0]), None
        else:
            train_idx, valid_idx = self._split(y_enc, seed)
        rows = self._batch(X, y_enc, weights, train_idx)
        valid = None if valid_idx is None else self._batch(X, y_enc, weights, valid_idx)
        if not float(rows.w.sum()) > 0:  # e.g. every weighted row fell into the validation slice
            raise ValueError(
                "sample_weight sums to zero over the training rows; nothing to learn from"
            )
        world = 1 if dist is None else dist.world_size
        batch_size = max(1, min(int(self.batch_size), len(rows)))
        steps = training.n_steps(len(rows), batch_size, world)
        epochs = 1 if partial else self.max_epochs
        scheduler = None if partial else self.build_scheduler(self.optimizer_, steps * epochs)
        forward = ddp.wrap(self.module_, self.device_, dist)
        if self.compile:
            forward = torch.compile(forward)
        start_epoch = len(self.history_) + 1 if not first else 1
        run = Run(
            train=rows, valid=valid, optimizer=self.optimizer_,
            scheduler=scheduler, forward=forward, batch_size=batch_size, steps=steps,
            epochs=range(start_epoch, start_epoch + epochs), seed=seed,
            generator=torch.Generator().manual_seed(seed), dist=dist, amp=self.amp,
            patience=None if partial else self.patience, augment=augment,
        )  # fmt: skip
        state, store = LoopState(), None
        if self.checkpoint is not None and not partial:
            devices = [self.device_] if self.device_.type == "cuda" else []
            store = Checkpoint(self, self.checkpoint, fingerprint(self, X, y_enc, weights),
                               scheduler, run.generator, devices)  # fmt: skip
            resume = store.restore()
            if resume is not None:  # go on after the last finished epoch (none if it stopped)
                state = LoopState.from_dict(
                    {**resume, "history": [dict(r) for r in resume["history"]]}
                )
                done = len(state.history)
                run.epochs = range(done + 1, (done if state.stopped else epochs) + 1)
            run.checkpoint = store.save
        self.criterion_ = self.build_criterion().to(self.device_)  # get_loss's default
        run.callbacks = list(self.callbacks or []) + ([training.PrintLog()] if self.verbose else [])
        run.average = None if self.ema is None else training.WeightAverage(self.module_, self.ema)
        return run, state, store

    def _split(self, y_enc: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        return data.validation_rows(y_enc, self.validation_fraction, seed, stratify=self._stratify)

    def _raw(self, X) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = self._validate_X(X, reset=False)
        return training.predict_raw(self.module_, self._tensor(X, torch.float32))


def _bad_columns(X) -> str:
    """For a DataFrame that failed validation: which columns hold what sklearn refused."""
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        return ""
    numeric = X.apply(pd.to_numeric, errors="coerce")
    text = [str(c) for c in X.columns if (numeric[c].isna() & X[c].notna()).any()]
    missing = [str(c) for c in X.columns if X[c].isna().any()]
    infinite = [str(c) for c in numeric.columns if np.isinf(numeric[c].to_numpy(float)).any()]
    parts = [f"{what}: {cols[:10]}" for what, cols in
             (("not numbers", text), ("NaN", missing), ("infinite", infinite)) if cols]  # fmt: skip
    return f" (columns with {'; '.join(parts)})" if parts else ""


def check_hyperparams(est: TorchEstimatorBase) -> None:
    """Refuse bad values of the constructor's params, naming the param (``fit`` calls it)."""
    est._check_routed(est._routed)

    def bad(name: str, rule: str) -> ValueError:
        return ValueError(f"{name} must be {rule}; got {getattr(est, name)!r}")

    # numbers.* so that numpy scalars (what GridSearchCV hands over from an array) pass
    def number(value) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)

    if not (number(est.lr) and est.lr > 0):
        raise bad("lr", "a positive number")

    def integer(value) -> bool:
        return number(value) and isinstance(value, numbers.Integral)

    for name in ("batch_size", "max_epochs"):
        if not integer(getattr(est, name)) or getattr(est, name) < 1:
            raise bad(name, "an integer >= 1")
    patience = est.patience
    if patience is not None and not (integer(patience) and patience >= 1):
        raise bad("patience", "None or an integer >= 1")
    if not (number(est.validation_fraction) and 0 <= est.validation_fraction < 1):
        raise bad("validation_fraction", "a number in [0, 1)")
    if est.ema is not None and not (number(est.ema) and 0 < est.ema < 1):
        raise bad("ema", "None or a decay in (0, 1), e.g. 0.999")
    if est.init_weights is not None and not isinstance(est.init_weights, str | os.PathLike):
        raise bad("init_weights", "None or the path of a .safetensors file")
    freeze = est.freeze
    if freeze is not None and (
        isinstance(freeze, str) or not all(isinstance(p, str) for p in freeze)
    ):
        raise bad("freeze", "None or a list of parameter-name prefixes, e.g. ['1', '2']")
