"""Saving and loading: a model is a folder of ``weights.safetensors`` and ``config.json`` (no
pickle, so loading runs no code), written atomically; pickling (``copy``, joblib) keeps tensors
on the CPU so that a model fitted on a GPU loads anywhere."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from tandem import training
from tandem.estimators.checkpoint import TIMING_KEYS, to_cpu

SAVE_FORMAT = "tandem-estimator/1"
# parameter values save() can store as JSON (numpy scalars from a search grid included)
JSON_TYPES = (str, int, float, bool, type(None), list, tuple, dict, np.generic)
CONFIG_KEYS = ("estimator", "params", "module_spec", "n_features_in", "feature_names_in",
               "n_outputs", "history", "best_epoch")  # fmt: skip


def read_config(path: Path, estimator: str | None = None) -> dict[str, Any]:
    """``path/config.json``, checked: a tandem model's, complete, of class ``estimator`` (any
    when None)."""
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
    if estimator is not None and config["estimator"] != estimator:
        raise ValueError(f"{path} holds a {config['estimator']}, not a {estimator}")
    return config


class Persistence:
    """``save``, ``load`` and pickling (a mixin of ``TorchEstimatorBase``)."""

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__
        if "module_" in state:  # store tensors on the CPU so CUDA-fitted models load anywhere
            state["module_"] = copy.deepcopy(self.module_).to("cpu")
            opt = self.optimizer_
            state["optimizer_"] = None if opt is None else to_cpu(opt.state_dict())
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
                self.optimizer_ = self.build_optimizer(self.module_)
                self.optimizer_.load_state_dict(opt_state)

    def save(self, path: str | Path) -> Path:
        """Write ``path/`` with ``weights.safetensors`` and ``config.json`` (no pickle).

        The directory is written beside its final place and renamed into it, so a crash never
        leaves a half-written model.
        """
        return self._save(path)

    def _config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the params that JSON can store, shapes and history."""
        params, unstored = {}, []
        for key, value in self.get_params(deep=False).items():
            if key == "callbacks":
                continue
            if isinstance(value, JSON_TYPES):
                params[key] = value
            elif key == "random_state":
                params[key] = None
            else:  # classes and callables cannot be stored without code; load() says so
                unstored.append(key)
        names = getattr(self, "feature_names_in_", None)
        return {
            "format": SAVE_FORMAT,
            "estimator": type(self).__name__,
            "params": params,
            "unstored_params": unstored,
            "module_spec": self.module if isinstance(self.module, str) else None,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else [str(f) for f in names],
            "n_outputs": int(self.n_outputs_),
            "history": [
                {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in self.history_
            ],
            "best_epoch": self.best_epoch_,
            # the fit's seed: partial_fit after load draws what it would have drawn unsaved
            "seed": int(self._seed),
            "torch_version": torch.__version__,
            **self._extra_config(),
        }

    def _save(self, path: str | Path, transformers: dict[str, Any] | None = None,
              **config_extra: Any) -> Path:  # fmt: skip
        """``save`` with fitted sklearn transformers that belong to the model, written (skops)
        into the same directory before it is swapped in: all of it lands, or none of it."""
        from safetensors.torch import save_file

        from tandem.features import save_transformer
        from tandem.io import atomic_dir

        check_is_fitted(self, "module_")
        path = Path(path)
        if not training.is_main_process():  # under torchrun, rank 0 writes (same weights)
            return path
        config = {**self._config(), **config_extra}
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
        path = Path(path)
        config = read_config(path, cls.__name__)
        params = dict(config["params"])
        if config["module_spec"] is None and module is None:
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
        est._restore(path, config)
        return est

    def _restore(self, path: Path, config: dict[str, Any]) -> None:
        """A loaded estimator's fitted state, from its config and weights."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        config_file, weights_file = path / "config.json", path / "weights.safetensors"
        self.device_ = training.resolve_device(self.device, fallback=True)
        self.n_features_in_ = config["n_features_in"]
        if config["feature_names_in"] is not None:
            self.feature_names_in_ = np.asarray(config["feature_names_in"], dtype=object)
        self.n_outputs_ = config["n_outputs"]
        try:
            self._restore_extra(config)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{config_file} has a missing or bad entry ({exc!r})") from exc
        self._check_weights_fit(config_file, weights_file)  # before any real allocation
        try:
            state = load_file(str(weights_file), device=str(self.device_))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{weights_file} is not a valid safetensors file: {exc}") from exc
        self.module_ = self._place(self.build_module(self.n_features_in_, self.n_outputs_))
        self.module_.load_state_dict(state)
        self.module_.eval()
        self._freeze(self.module_)  # training on (partial_fit) keeps the frozen parts fixed
        # built when training goes on (partial_fit): torch's optimizers import torch._dynamo on
        # construction, about 2 s that predict, evaluate, export and serve do not need
        self.optimizer_ = None
        self.history_ = config["history"]
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = config["best_epoch"]
        self.fit_seconds_ = None  # not stored: see TIMING_KEYS
        seed = config.get("seed", config["params"].get("random_state"))  # none saved: 0
        self._seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0

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
                shapes = self.build_module(self.n_features_in_, self.n_outputs_).state_dict()
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


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a model config")


def write_weights(model_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Export the weights of the tandem model saved in ``model_dir`` to the safetensors file
    ``out``, for another entry to start from (``load_matching``).

    The file's metadata (string to string) records which network the weights fit:
    ``tandem.module`` (the module spec; empty for a custom module class) and
    ``tandem.module_params`` (the ``module__*`` estimator params, JSON), with the estimator, its
    input and output sizes and ``tandem.source`` (``model_dir`` as given). ``out`` is written
    atomically, parent folders created, so a reader never sees half a file.
    """
    from safetensors.torch import save_file

    from tandem.io import atomic_path
    from tandem.weights import SUFFIX, WEIGHTS_FORMAT, read_weights

    model_dir, out = Path(model_dir), Path(out)
    if out.suffix.lower() != SUFFIX:
        raise ValueError(
            f"{out}: the weights are written as safetensors, so it must end in {SUFFIX}"
        )
    config = read_config(model_dir)
    params = config["params"]
    spec = config.get("module_spec")
    if spec is not None and not isinstance(spec, str):
        raise ValueError(f"{model_dir / 'config.json'}: module_spec must be a name, not {spec!r}")
    state = read_weights(model_dir / "weights.safetensors")
    module_params = {k: v for k, v in sorted(params.items()) if k.startswith("module__")}
    metadata = {
        "format": "pt",  # what other safetensors readers (e.g. transformers) expect here
        "tandem.format": WEIGHTS_FORMAT,
        "tandem.module": spec or "",
        "tandem.module_params": json.dumps(module_params, sort_keys=True),
        "tandem.source": str(model_dir),
    }
    for key in ("estimator", "n_features_in", "n_outputs"):
        if config.get(key) is not None:
            metadata[f"tandem.{key}"] = str(config[key])
    state = {name: tensor.contiguous() for name, tensor in state.items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return {"path": str(out), "tensors": len(state), "module": spec}
