"""TorchClassifier and TorchRegressor: scikit-learn estimators around torch modules.

The constructor stores its arguments unchanged; ``fit`` validates, builds the module and trains it
with the loop in ``tandem.training``. Nested arguments are routed by double underscore
(``module__hidden_sizes``, ``optimizer__weight_decay``, ``criterion__...``, ``lr_schedule__...``)
and take part in ``get_params``/``set_params``/``clone`` like any other parameter.
"""

from __future__ import annotations

import copy
import inspect
import json
import numbers
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from torch import nn

from tandem import data, models, training
from tandem.models import nearest_hint

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
SCHEDULES = ("onecycle", "cosine")
SAVE_FORMAT = "tandem-estimator/1"
TARGET_SCALER_FILE = "target_scaler.skops"  # a regressor's target transformer, in its directory
# parameter values save() can store as JSON (numpy scalars from a search grid included)
JSON_TYPES = (str, int, float, bool, type(None), list, tuple, dict, np.generic)
CONFIG_KEYS = ("estimator", "params", "module_spec", "n_features_in", "feature_names_in",
               "n_outputs", "history", "best_epoch")  # fmt: skip
# wall-clock facts of one run: kept out of saved models so that the same data, params and code
# give a byte-identical artifact (and DVC can skip what depends on it)
TIMING_KEYS = ("seconds",)
# params that change neither the trained weights nor the data order: a checkpoint written under
# other values of these is still resumed
RESUME_INDEPENDENT = ("callbacks", "verbose", "checkpoint")


def _lookup(kind: str, value: Any, table: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    if value not in table:
        raise ValueError(
            f"Unknown {kind} {value!r}; choose one of {sorted(table)} or pass a class."
            + nearest_hint(value, list(table))
        )
    return table[value]


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class _TorchEstimator(BaseEstimator):
    """Shared machinery of TorchClassifier and TorchRegressor."""

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

    def _prefixed(self, prefix: str) -> dict[str, Any]:
        head = prefix + "__"
        return {k[len(head) :]: v for k, v in self._routed.items() if k.startswith(head)}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ building blocks
    def _build_module(self, n_features: int, n_outputs: int) -> nn.Module:
        spec, kwargs = self.module, self._prefixed("module")
        if isinstance(spec, str):
            return models.build_module(spec, n_features, n_outputs, **kwargs)
        if isinstance(spec, nn.Module):
            if kwargs:
                raise ValueError("module__* arguments need a module name, class or callable")
            return copy.deepcopy(spec)
        if callable(spec):
            for name, value in (("n_features", n_features), ("n_outputs", n_outputs)):
                if _accepts(spec, name):
                    kwargs.setdefault(name, value)
            built = spec(**kwargs)
            if not isinstance(built, nn.Module):
                raise TypeError(f"module {spec!r} returned {type(built).__name__}, not nn.Module")
            return built
        raise TypeError(
            f"module must be a registered name {models.registered_modules()}, an nn.Module "
            f"class or a callable returning one; got {spec!r}"
        )

    def _build_criterion(self) -> nn.Module:
        spec = self.criterion if self.criterion is not None else self._default_criterion
        cls = _lookup("criterion", spec, CRITERIA)
        if isinstance(cls, nn.Module):
            raise TypeError("criterion must be a name or a loss class (it is built per fit)")
        return cls(reduction="none", **self._prefixed("criterion"))

    def _build_optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        cls = _lookup("optimizer", self.optimizer, OPTIMIZERS)
        kwargs = self._prefixed("optimizer")
        if cls in (torch.optim.Adam, torch.optim.AdamW) and _fused_ok(module, kwargs):
            # One fused kernel per step instead of ~10 ops per parameter tensor: usps_cnn's CPU
            # step drops from 1.65 to 0.42 ms (batch 32). optimizer__fused=False opts out.
            kwargs["fused"] = True
        return cls(module.parameters(), lr=self.lr, **kwargs)

    def _place(self, module: nn.Module) -> nn.Module:
        """Move a freshly built module to ``device_``; conv nets go channels-last.

        oneDNN's convolutions and max-pooling run faster on NHWC: usps_cnn's forward+backward at
        batch 32 drops from 7.4 to about 6.1 ms on 2 cores; cuDNN's tensor-core kernels (bf16
        under ``amp``) want NHWC too. fit and load both use it, so a loaded model computes with
        the same kernels (identical predictions).
        """
        module = module.to(self.device_)
        if _has_conv(module):
            module = module.to(memory_format=torch.channels_last)
        return module

    def _build_scheduler(self, optimizer, total_steps: int):
        kwargs = self._prefixed("lr_schedule")
        if self.lr_schedule is None:
            if kwargs:
                raise ValueError("lr_schedule__* arguments need lr_schedule='onecycle'|'cosine'")
            return None
        if self.lr_schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.lr, total_steps=max(total_steps, 1), **kwargs
            )
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(total_steps, 1), **kwargs
            )
        raise ValueError(
            f"Unknown lr_schedule {self.lr_schedule!r}; choose None, 'onecycle' or 'cosine'."
            + nearest_hint(str(self.lr_schedule), list(SCHEDULES))
        )

    def _check_hyperparams(self) -> None:
        self._check_routed(self._routed)

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}")

        # numbers.* so that numpy scalars (what GridSearchCV hands over from an array) pass
        def number(value) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)

        def integer(value) -> bool:
            return number(value) and isinstance(value, numbers.Integral)

        if not (number(self.lr) and self.lr > 0):
            raise bad("lr", "a positive number")
        for name in ("batch_size", "max_epochs"):
            if not integer(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.patience is not None and (not integer(self.patience) or self.patience < 1):
            raise bad("patience", "None or an integer >= 1")
        if not (number(self.validation_fraction) and 0 <= self.validation_fraction < 1):
            raise bad("validation_fraction", "a number in [0, 1)")
        if self.ema is not None and not (number(self.ema) and 0 < self.ema < 1):
            raise bad("ema", "None or a decay in (0, 1), e.g. 0.999")

    def _image_shape(self, n_features: int) -> tuple[int, int, int]:
        """(C, H, W) of the rows: ``augment__shape``, else the module's ``image_shape`` and
        ``in_channels``, else a square one-channel image."""
        shape = self._prefixed("augment").get("shape")
        module_kwargs = self._prefixed("module")
        if shape is None and module_kwargs.get("image_shape") is not None:
            shape = [module_kwargs.get("in_channels", 1), *module_kwargs["image_shape"]]
        return training.image_shape(n_features, shape)

    def _build_augment(self, n_features: int) -> training.Augment | None:
        """augment="affine" with its ``augment__*`` ranges (degrees, fractions, pixels)."""
        kwargs = self._prefixed("augment")
        if self.augment is None:
            if set(kwargs) - {"shape"}:  # the shape alone also serves TTA
                raise ValueError("augment__* arguments need augment='affine'")
            return None
        if self.augment not in AUGMENTS:
            raise ValueError(
                f"Unknown augment {self.augment!r}; choose None or one of {list(AUGMENTS)}."
                + nearest_hint(str(self.augment), list(AUGMENTS))
            )
        kwargs.pop("shape", None)
        shape = self._image_shape(n_features)
        names = [f for f in training.Augment.__dataclass_fields__ if f != "shape"]
        for key, value in kwargs.items():
            if key not in names:
                raise ValueError(
                    f"Invalid parameter 'augment__{key}'; valid: "
                    f"{['augment__' + n for n in names + ['shape']]}." + nearest_hint(key, names)
                )
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
                raise ValueError(f"augment__{key} must be a number >= 0; got {value!r}")
        return training.Augment(shape=shape, **{k: float(v) for k, v in kwargs.items()})

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

    def _split(self, y_enc: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        return data.validation_rows(y_enc, self.validation_fraction, seed, stratify=self._stratify)

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, y, sample_weight, *, partial: bool, classes=None):
        first = not (partial and hasattr(self, "module_"))
        epochs = 1 if partial else self.max_epochs
        if first:
            self._check_hyperparams()
        X, y = self._validate_X(X, y=y, reset=first, **self._y_validation)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float32)
        if np.any(sample_weight < 0):
            raise ValueError("sample_weight must be non-negative")
        y_enc = self._encode_y(y, first=first, classes=classes)
        if partial and self.ema is not None:
            raise ValueError("ema averages the weights over a whole fit; partial_fit cannot use it")
        augment = self._build_augment(X.shape[1])
        if first:
            self.device_ = training.resolve_device(self.device)
            seed = training.seed_from(self.random_state)
            self._seed = seed
        else:
            seed = training.seed_from(self._seed + len(self.history_))
        dist = training.init_distributed(self.device_)  # None outside torchrun
        if dist is not None:
            _check_same_rows(X.shape[0], self.device_)
            if self.batch_size < 2 * dist.world_size:
                raise ValueError(
                    f"batch_size={self.batch_size} is the global batch: with {dist.world_size} "
                    f"ranks it must be at least {2 * dist.world_size} (two rows per rank)"
                )
        callbacks = list(self.callbacks or [])
        if self.verbose:
            callbacks.append(training.PrintLog())
        devices = [self.device_] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if first:
                self.module_ = self._place(self._build_module(X.shape[1], self.n_outputs_))
            if first or self.optimizer_ is None:  # None: a loaded model trains on
                self.optimizer_ = self._build_optimizer(self.module_)
            if not partial:
                train_idx, valid_idx = self._split(y_enc, seed)
            else:  # partial_fit: one pass over all of the data given
                train_idx, valid_idx = np.arange(X.shape[0]), None
            rows = self._batch(X, y_enc, sample_weight, train_idx)
            valid = None if valid_idx is None else self._batch(X, y_enc, sample_weight, valid_idx)
            world = 1 if dist is None else dist.world_size
            steps = training.n_steps(len(rows), max(1, min(self.batch_size, len(rows))), world)
            scheduler = None if partial else self._build_scheduler(self.optimizer_, steps * epochs)
            forward = self.module_
            if dist is not None:  # gradients averaged over the ranks; rank 0's weights to all
                training.sync_batchnorm(self.module_, self.device_)
                forward = nn.parallel.DistributedDataParallel(
                    self.module_, device_ids=None if self.device_.type == "cpu" else [self.device_]
                )
            if self.compile:
                forward = torch.compile(forward)
            start_epoch = len(self.history_) + 1 if not first else 1
            generator = torch.Generator().manual_seed(seed)
            store = None
            resume = None
            if self.checkpoint is not None and not partial:
                store = _Checkpoint(
                    self, self.checkpoint, _fingerprint(self, X, y_enc, sample_weight),
                    scheduler, generator, devices,
                )  # fmt: skip
                resume = store.restore()
            last_epoch = start_epoch + epochs - 1
            if resume is not None:  # go on after the last finished epoch (none if it had stopped)
                start_epoch = len(resume["history"]) + 1
                last_epoch = len(resume["history"]) if resume["stopped"] else epochs
            start = time.perf_counter()
            history, best = training.train_epochs(
                self.module_,
                train=rows,
                valid=valid,
                criterion=self._build_criterion().to(self.device_),
                optimizer=self.optimizer_,
                scheduler=scheduler,
                batch_size=self.batch_size,
                epochs=range(start_epoch, last_epoch + 1),
                patience=None if partial else self.patience,
                generator=generator,
                score=self._score_fn,
                score_name=self._score_name,
                callbacks=callbacks,
                estimator=self,
                forward=forward,
                amp=self.amp,
                resume=resume,
                checkpoint=None if store is None else store.save,
                dist=dist,
                augment=augment,
                ema=self.ema,
                seed=seed,
            )
            if store is not None and training.is_main_process():
                store.finish()
        self.module_.eval()
        self.history_ = (self.history_ if not first else []) + history
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = best if best is not None else self.n_iter_
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _batch(self, X, y_enc, w, idx) -> training.Batch:
        return training.Batch(
            X=self._tensor(X[idx], torch.float32),
            y=self._tensor(y_enc[idx], self._y_dtype),
            w=self._tensor(w[idx], torch.float32),
        )

    def fit(self, X, y, sample_weight=None):
        """Train a fresh module on (X, y); a validation slice is held out when configured."""
        return self._fit(X, y, sample_weight, partial=False)

    def _raw(self, X) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = self._validate_X(X, reset=False)
        return training.predict_raw(self.module_, self._tensor(X, torch.float32))

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__
        if "module_" in state:  # store tensors on the CPU so CUDA-fitted models load anywhere
            state["module_"] = copy.deepcopy(self.module_).to("cpu")
            opt = self.optimizer_
            state["optimizer_"] = None if opt is None else _to_cpu(opt.state_dict())
            state.pop("device_", None)
        return state

    def __setstate__(self, state):
        opt_state = state.pop("optimizer_", None)
        super().__setstate__(state)
        if "module_" in state:
            self.device_ = training.resolve_device(self.device, fallback=True)
            self.module_ = self._place(self.module_)
            self.optimizer_ = None  # a loaded model not trained since: built when it trains on
            if opt_state is not None:
                self.optimizer_ = self._build_optimizer(self.module_)
                self.optimizer_.load_state_dict(opt_state)

    def save(self, path: str | Path) -> Path:
        """Write ``path/`` with ``weights.safetensors`` and ``config.json`` (no pickle).

        The directory is written beside its final place and renamed into it, so a crash never
        leaves a half-written model.
        """
        return self._save(path)

    def _save(self, path: str | Path, transformers: dict[str, Any] | None = None,
              **config_extra: Any) -> Path:  # fmt: skip
        """``save`` with fitted sklearn transformers that belong to the model, written (skops)
        into the same directory before it is swapped in: all of it lands, or none of it."""
        from safetensors.torch import save_file

        from tandem.features import save_transformer

        check_is_fitted(self, "module_")
        path = Path(path)
        if not training.is_main_process():  # under torchrun, rank 0 writes (same weights)
            return path
        params = {}
        unstored = []
        for key, value in self.get_params(deep=False).items():
            if key == "callbacks":
                continue
            if isinstance(value, JSON_TYPES):
                params[key] = value
            elif key == "random_state":
                params[key] = None
            else:  # classes and callables cannot be stored without code; load() says so
                unstored.append(key)
        config = {
            "format": SAVE_FORMAT,
            "estimator": type(self).__name__,
            "params": params,
            "unstored_params": unstored,
            "module_spec": self.module if isinstance(self.module, str) else None,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": (
                [str(f) for f in self.feature_names_in_]
                if hasattr(self, "feature_names_in_")
                else None
            ),
            "n_outputs": int(self.n_outputs_),
            "history": [
                {k: v for k, v in record.items() if k not in TIMING_KEYS}
                for record in self.history_
            ],
            "best_epoch": self.best_epoch_,
            # the fit's seed: partial_fit after load draws what it would have drawn unsaved
            "seed": int(self._seed),
            "torch_version": torch.__version__,
            **self._extra_config(),
            **config_extra,
        }
        from tandem.io import atomic_dir

        with atomic_dir(path) as tmp:
            state = {
                k: v.detach().to("cpu").contiguous() for k, v in self.module_.state_dict().items()
            }
            save_file(state, str(tmp / "weights.safetensors"))
            for name, transformer in (transformers or {}).items():
                save_transformer(transformer, tmp / name)
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", module: Any = None):
        """Load a model written by ``save``. Only JSON and safetensors are read: no code runs.

        ``module`` must be given when the model was built from a class or callable rather than
        a registered name (code is never imported from the file).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        config_file, weights_file = path / "config.json", path / "weights.safetensors"
        for f in (config_file, weights_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f} is missing: not a model saved by tandem")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{config_file} is not valid JSON ({exc}); refusing to load") from exc
        if not isinstance(config, dict) or config.get("format") != SAVE_FORMAT:
            raise ValueError(f"{config_file} is not a tandem model config ({SAVE_FORMAT})")
        missing = [key for key in CONFIG_KEYS if key not in config]
        if missing or not isinstance(config["params"], dict):
            raise ValueError(f"{config_file} is incomplete (missing {missing}); refusing to load")
        if config["estimator"] != cls.__name__:
            raise ValueError(f"{path} holds a {config['estimator']}, not a {cls.__name__}")
        params = dict(config["params"])
        if config["module_spec"] is None:
            if module is None:
                raise ValueError(
                    f"{path} was fitted with a custom module; pass module=<class or callable>"
                )
        if module is not None:
            params["module"] = module
        lost = [key for key in config.get("unstored_params", []) if key != "module"]
        if lost:
            warnings.warn(
                f"{path}: {lost} were classes or callables, which are not saved; they are back "
                "at their defaults (set_params them before training further)",
                UserWarning,
                stacklevel=2,
            )
        params["device"] = device
        est = cls(**params)
        est.device_ = training.resolve_device(device, fallback=True)
        est.n_features_in_ = config["n_features_in"]
        if config["feature_names_in"] is not None:
            est.feature_names_in_ = np.asarray(config["feature_names_in"], dtype=object)
        est.n_outputs_ = config["n_outputs"]
        try:
            est._restore_extra(config)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{config_file} has a missing or bad entry ({exc!r})") from exc
        est._check_weights_fit(config_file, weights_file)  # before any real allocation
        try:
            state = load_file(str(weights_file), device=str(est.device_))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{weights_file} is not a valid safetensors file: {exc}") from exc
        est.module_ = est._place(est._build_module(est.n_features_in_, est.n_outputs_))
        est.module_.load_state_dict(state)
        est.module_.eval()
        # built when training goes on (partial_fit): torch's optimizers import torch._dynamo on
        # construction, about 2 s that predict, evaluate, export and serve do not need
        est.optimizer_ = None
        est.history_ = config["history"]
        est.n_iter_ = len(est.history_)
        est.best_epoch_ = config["best_epoch"]
        est.fit_seconds_ = None  # not stored: see TIMING_KEYS
        seed = config.get("seed", params.get("random_state"))  # a config without one: 0
        est._seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        return est

    def _check_weights_fit(self, config_file: Path, weights_file: Path) -> None:
        """Refuse a model whose config describes another network than its weights hold, before
        anything is allocated: the module is built on torch's meta device (shapes, no memory),
        and its tensors' names and shapes are compared with the weights file's header. So an
        edited ``config.json`` (``module__hidden_sizes: [40000, 40000]``) costs nothing."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights_file), framework="pt") as f:
                stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{weights_file} is not a valid safetensors file: {exc}") from exc
        try:
            with torch.device("meta"):
                shapes = self._build_module(self.n_features_in_, self.n_outputs_).state_dict()
        except Exception as exc:  # noqa: BLE001 - any bad argument (negative sizes, wrong types)
            raise ValueError(
                f"{config_file}: its params do not build a network ({type(exc).__name__}: "
                f"{str(exc)[:200]}); refusing to load"
            ) from None
        built = {k: tuple(v.shape) for k, v in shapes.items()}
        if built != stored:
            diff = sorted(k for k in built.keys() | stored.keys() if built.get(k) != stored.get(k))
            first = diff[0]
            raise ValueError(
                f"{config_file} describes another network than {weights_file.name} holds "
                f"({len(diff)} tensors differ; {first}: config {built.get(first)}, weights "
                f"{stored.get(first)}); refusing to load"
            )

    def _extra_config(self) -> dict:
        return {}

    def _restore_extra(self, config: dict) -> None:
        pass


def _has_conv(module: nn.Module) -> bool:
    return any(p.dim() == 4 for p in module.parameters())


def _fused_ok(module: nn.Module, kwargs: dict) -> bool:
    """Use fused Adam unless the caller chose an implementation: always on CUDA; on the CPU for
    conv nets, where the per-tensor Adam step is 18% of an epoch (measured on usps_cnn). Small
    MLPs keep the default implementation."""
    params = list(module.parameters())
    if {"fused", "foreach"} & kwargs.keys() or not params:
        return False
    if not all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        return False
    return params[0].device.type == "cuda" or _has_conv(module)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a model config")


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


def _fingerprint(est: _TorchEstimator, X, y_enc, sample_weight) -> str:
    """What a checkpoint must match to be resumed: estimator class and params, data, code."""
    import hashlib

    digest = hashlib.sha256()
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in RESUME_INDEPENDENT}
    digest.update(type(est).__name__.encode())
    digest.update(json.dumps(params, sort_keys=True, default=repr).encode())
    for array in (X, y_enc, sample_weight):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    for module in (training, models):  # the code that trains: another version starts afresh
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()


class _Checkpoint:
    """One file holding everything an interrupted ``fit`` needs to go on exactly where it was.

    Written after every epoch (``tandem.io.atomic_path``: the previous checkpoint stays whole
    until the new one replaces it) with ``torch.save``, read with ``weights_only=True``, which
    unpickles tensors and plain containers only, never code. A checkpoint whose fingerprint
    (params, data, code) differs, or whose fit completed, is not resumed: the fit starts afresh.
    """

    def __init__(self, est, path, fingerprint, scheduler, generator, devices):
        self.est, self.path, self.fingerprint = est, Path(path), fingerprint
        self.scheduler, self.generator, self.devices = scheduler, generator, devices
        self.last: dict | None = None

    def restore(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # "Unsupported global": a pickle that wants code (a class, a function), never
            # unpickled here; anything else is not a checkpoint at all
            what = ("holds objects other than tensors (a pickle not written by tandem), which "
                    "are never loaded" if "Unsupported global" in str(exc)
                    else "cannot be read (not a checkpoint)")  # fmt: skip
            warnings.warn(f"checkpoint {self.path} {what}; starting afresh", stacklevel=4)
            return None
        except Exception as exc:  # a corrupt or foreign file: say so, then train afresh
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            warnings.warn(f"checkpoint {self.path} cannot be read ({type(exc).__name__}: "
                          f"{first}); starting afresh", stacklevel=4)  # fmt: skip
            return None
        if state.get("fingerprint") != self.fingerprint or state.get("complete"):
            reason = "is complete" if state.get("complete") else "comes from other params or data"
            warnings.warn(f"checkpoint {self.path} {reason}; starting afresh", stacklevel=4)
            return None
        est = self.est
        est.module_.load_state_dict(state["module"])
        est.optimizer_.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        for device, rng in zip(self.devices, state["cuda_rng"], strict=False):
            torch.cuda.set_rng_state(rng, device)
        loop = state["loop"]
        for key in ("best_state", "ema"):  # weights kept beside the live ones
            if loop.get(key) is not None:
                loop[key] = {k: v.to(est.device_) for k, v in loop[key].items()}
        self.last = loop
        return loop

    def save(self, loop: dict, complete: bool = False) -> None:
        from tandem.io import atomic_path

        est = self.est
        state = {
            "fingerprint": self.fingerprint,
            "complete": complete,
            "module": _to_cpu(est.module_.state_dict()),
            "optimizer": _to_cpu(est.optimizer_.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": torch.get_rng_state(),
            "cuda_rng": [torch.cuda.get_rng_state(d) for d in self.devices],
            "loop": {
                **loop,
                "history": [
                    {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in loop["history"]
                ],
                "best_state": None if loop["best_state"] is None else _to_cpu(loop["best_state"]),
                "ema": None if loop.get("ema") is None else _to_cpu(loop["ema"]),
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.last = loop

    def finish(self) -> None:
        """Mark the checkpoint complete, so that it is never resumed (a finished fit is final)."""
        if self.last is not None:
            self.save(self.last, complete=True)


def _check_same_rows(n: int, device: torch.device) -> None:
    """Under torchrun every rank must hold the same rows (each trains on its share of each
    batch). Ranks given different numbers of rows (another file, another split) are refused
    here; the rows' values are not compared."""
    import torch.distributed as dist

    counts = torch.tensor([n, -n], dtype=torch.float64, device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)  # [max n, -min n]
    if counts[0] != -counts[1]:
        raise ValueError(
            f"ranks were given different data under torchrun ({int(-counts[1])} to "
            f"{int(counts[0])} rows); every rank must fit on the same rows"
        )


class TorchClassifier(ClassifierMixin, _TorchEstimator):
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
        shape = self._image_shape(X.shape[1])
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


class TorchRegressor(RegressorMixin, _TorchEstimator):
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
