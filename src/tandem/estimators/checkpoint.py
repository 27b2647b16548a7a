"""Checkpoints: one file holding everything an interrupted ``fit`` needs to go on exactly where
it was, written after every epoch when the estimator's ``checkpoint`` names a file."""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tandem import models, training

# params that change neither the trained weights nor the data order: a checkpoint written under
# other values of these is still resumed
RESUME_INDEPENDENT = ("callbacks", "verbose", "checkpoint")
# wall-clock facts of one run: kept out of saved models and checkpoints, so that the same data,
# params and code give a byte-identical artifact (and DVC can skip what depends on it)
TIMING_KEYS = ("seconds",)


def fingerprint(est: Any, X: np.ndarray, y_enc: np.ndarray, sample_weight: np.ndarray) -> str:
    """What a checkpoint must match to be resumed: the estimator's class (its code included:
    an overridden ``get_loss`` is another fit) and params, the data, and tandem's code."""
    digest = hashlib.sha256()
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in RESUME_INDEPENDENT}
    digest.update(type(est).__qualname__.encode())
    for cls in type(est).__mro__:  # a subclass's own code (its get_loss) is part of the fit
        if cls.__module__.startswith(("tandem.", "sklearn.", "builtins")):
            continue
        digest.update(_source(cls).encode())
    digest.update(json.dumps(params, sort_keys=True, default=repr).encode())
    if getattr(est, "init_weights", None) is not None:  # the file the fit starts from
        digest.update(Path(est.init_weights).read_bytes())
    for array in (X, y_enc, sample_weight):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    package = Path(__file__).parent  # the code that trains: another version starts afresh
    for path in (Path(training.__file__), Path(models.__file__), *sorted(package.glob("*.py"))):
        digest.update(path.read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()


def _source(cls: type) -> str:
    """A class's source, or its name where Python cannot show it (defined in a REPL)."""
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return cls.__qualname__


def to_cpu(obj: Any) -> Any:
    """Tensors (in dicts, lists and tuples) moved to the CPU, detached."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class Checkpoint:
    """Written after every epoch (``tandem.io.atomic_path``: the previous checkpoint stays whole
    until the new one replaces it) with ``torch.save``, read with ``weights_only=True``, which
    unpickles tensors and plain containers only, never code. A checkpoint whose fingerprint
    (params, data, code) differs, or whose fit completed, is not resumed: the fit starts afresh.
    """

    def __init__(self, est, path, fingerprint, scheduler, generator, devices):
        self.est, self.path, self.fingerprint = est, Path(path), fingerprint
        self.scheduler, self.generator, self.devices = scheduler, generator, devices
        self.last: dict | None = None

    def _read(self) -> dict | None:
        """The file's state, or None (with a warning saying why) when it cannot be resumed."""
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
            warnings.warn(f"checkpoint {self.path} {what}; starting afresh", stacklevel=5)
            return None
        except Exception as exc:  # a corrupt or foreign file: say so, then train afresh
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            warnings.warn(f"checkpoint {self.path} cannot be read ({type(exc).__name__}: "
                          f"{first}); starting afresh", stacklevel=5)  # fmt: skip
            return None
        if state.get("fingerprint") != self.fingerprint or state.get("complete"):
            reason = "is complete" if state.get("complete") else "comes from other params or data"
            warnings.warn(f"checkpoint {self.path} {reason}; starting afresh", stacklevel=5)
            return None
        return state

    def restore(self) -> dict | None:
        """The loop's state to go on from, with the module, optimizer, schedule and random
        generators put back as they were; None to start afresh."""
        state = self._read()
        if state is None:
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
            "module": to_cpu(est.module_.state_dict()),
            "optimizer": to_cpu(est.optimizer_.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": torch.get_rng_state(),
            "cuda_rng": [torch.cuda.get_rng_state(d) for d in self.devices],
            "loop": {
                **loop,
                "history": [
                    {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in loop["history"]
                ],
                "best_state": None if loop["best_state"] is None else to_cpu(loop["best_state"]),
                "ema": None if loop.get("ema") is None else to_cpu(loop["ema"]),
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
