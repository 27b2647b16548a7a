"""Transfer learning: start a network from another one's weights, and keep parts of it fixed.

Weights come only from ``.safetensors`` files: a pickled checkpoint (``.pt``, ``.pth``, ``.bin``,
``.ckpt``) is never loaded, because unpickling runs whatever code the file holds. Tensors are
matched by name and shape (``load_matching``): a new head for another number of classes keeps its
fresh initialisation, and every tensor that did not transfer is reported with the reason, so a
naming mismatch between two networks is seen rather than silently training from scratch.
``tandem.estimators.persistence.write_weights`` exports a saved model's weights as such a file.
Only torch and safetensors are used here: the estimators build on this module, never the other
way round.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SUFFIX = ".safetensors"
WEIGHTS_FORMAT = "tandem-weights/1"  # recorded in the metadata of files write_weights writes
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
NOT_IN_FILE = "not in the file"
_SHOWN = 5  # names listed in one-line messages before "... (N more)"


def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _some(names: Sequence[str], n: int = _SHOWN) -> str:
    """At most ``n`` names, then how many more there are."""
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, on the CPU.

    Nothing else is read: any other suffix is refused before the file is opened (a pickled
    checkpoint runs code when it is loaded), and a file that is not valid safetensors is an error
    naming it, never a partial result.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != SUFFIX:
        kind = (
            "a pickled checkpoint"
            if suffix in PICKLE_SUFFIXES
            else f"a {suffix or 'suffixless'} file"
        )
        raise ValueError(
            f"{path} is {kind}: only {SUFFIX} files are read. Pickled files (.pt, .pth, .bin, "
            ".ckpt) are never loaded, because unpickling runs code from the file; convert it once, "
            "where you trust it: safetensors.torch.save_file(model.state_dict(), "
            '"x.safetensors")'
        )
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: no weights to read")
    if not path.is_file():
        raise ValueError(f"{path} is not a file: give the {SUFFIX} file itself")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a valid safetensors file: {exc}") from exc


@dataclass
class Transfer:
    """What ``load_matching`` did: the module tensors it ``loaded``; those it ``skipped`` (left as
    initialised), each with the reason; and the file's tensors the module has no name for."""

    loaded: list[str]
    skipped: dict[str, str]
    unused: list[str]
    source: str = ""

    def summary(self) -> str:
        """One line for a log: how many tensors transferred, which did not and why."""
        source = f" from {self.source}" if self.source else ""
        line = f"{len(self.loaded)} tensors loaded{source}"
        if self.skipped:
            reasons = [f"{name} ({why})" for name, why in self.skipped.items()]
            line += f"; {len(self.skipped)} left as initialised: {_some(reasons)}"
        if self.unused:
            line += f"; {len(self.unused)} in the file unused: {_some(self.unused)}"
        return line

    __str__ = summary


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.is_complex():
        return "complex"
    return "float" if tensor.is_floating_point() else "integer"


def load_matching(module: nn.Module, path: str | os.PathLike[str]) -> Transfer:
    """Copy into ``module`` every tensor of the safetensors file ``path`` whose name and shape
    match one of its own (parameters and buffers, e.g. BatchNorm running statistics).

    The copies go into the module's tensors in place, keeping their device and dtype, so an
    optimizer built before still holds them. Everything else stays as initialised and is reported
    in the returned ``Transfer``. Not a single match is an error that lists names from both sides:
    it almost always means the two networks name their layers differently (a ``model.`` prefix, or
    another architecture), and training from scratch by accident would hide that.
    """
    from torch.nn.parameter import UninitializedTensorMixin

    path = Path(path)
    stored = read_weights(path)
    own = module.state_dict(keep_vars=True)
    matching: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for name, tensor in own.items():
        if not isinstance(tensor, torch.Tensor):  # a module's extra (non-tensor) state
            continue
        if name not in stored:
            skipped[name] = NOT_IN_FILE
        elif isinstance(tensor, UninitializedTensorMixin):
            skipped[name] = "not initialised yet (a lazy module): run one batch through it first"
        elif stored[name].shape != tensor.shape:
            skipped[name] = (
                f"shape {_shape(stored[name].shape)} in the file, "
                f"{_shape(tensor.shape)} in the module"
            )
        elif _kind(stored[name]) != _kind(tensor):
            skipped[name] = f"dtype {stored[name].dtype} in the file, {tensor.dtype} in the module"
        else:
            matching[name] = stored[name]
    module_names = [name for name, t in own.items() if isinstance(t, torch.Tensor)]
    unused = [name for name in stored if name not in own]
    if not matching:
        mismatched = [f"{name} ({why})" for name, why in skipped.items() if why != NOT_IN_FILE]
        detail = f"; same names, other shapes: {_some(mismatched, 3)}" if mismatched else ""
        raise ValueError(
            f"{path}: not one tensor fits the module (same name and shape){detail}. The file "
            f"holds {len(stored)} tensors ({_some(list(stored)) or 'none'}), the module "
            f"{len(module_names)} ({_some(module_names) or 'none'}): are these weights of "
            "another network, or are its layers named differently?"
        )
    # load_state_dict copies under no_grad into the tensors themselves (param.copy_), casting to
    # their dtype and device, and runs the modules' own loading hooks. The module's state-dict
    # versions go with the tensors: the file is in the module's current format, so no fix-up for
    # an older one (a converted layout, BatchNorm's added counter) runs on it
    subset: dict[str, Any] = dict(matching)
    metadata = getattr(own, "_metadata", None)
    if metadata is not None:
        subset = _with_metadata(subset, metadata)
    with torch.no_grad():
        module.load_state_dict(subset, strict=False)
    return Transfer(loaded=list(matching), skipped=skipped, unused=unused, source=str(path))


def _with_metadata(state: dict[str, Any], metadata: Any) -> dict[str, Any]:
    from collections import OrderedDict

    ordered: OrderedDict[str, Any] = OrderedDict(state)
    ordered._metadata = metadata  # type: ignore[attr-defined]
    return ordered


def _prefixes(prefixes: str | Sequence[str]) -> list[str]:
    """A single string is one prefix (not a sequence of one-letter prefixes)."""
    found = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    for prefix in found:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(
                f"freeze prefix {prefix!r}: give a module or parameter name such as '0' or "
                "'features.0'"
            )
    return found


def _under(name: str, prefix: str) -> bool:
    """Whether the dotted ``name`` is ``prefix`` or lies inside it: "1" covers "1.weight", never
    "10.weight"."""
    return name == prefix or name.startswith(prefix + ".")


def _unknown(module: nn.Module, prefix: str, what: str = "parameter") -> ValueError:
    top: list[str] = []
    for name, _ in [*module.named_parameters(), *module.named_buffers()]:
        head = name.split(".", 1)[0]
        if head not in top:
            top.append(head)
    return ValueError(
        f"freeze prefix {prefix!r} matches no {what} of the {type(module).__name__}; its "
        f"top-level names are {', '.join(top) or 'none (it has no parameters)'}"
    )


def freeze(module: nn.Module, prefixes: str | Sequence[str]) -> list[str]:
    """Stop training the parameters under ``prefixes`` (``requires_grad=False``); return their
    names.

    A parameter is under a prefix when its dotted name equals it or starts with it and a dot, so
    ``"1"`` freezes ``1.weight`` and never ``10.weight``. A prefix under which there is no
    parameter is an error naming it, since a typo would otherwise train what was meant to stay.
    """
    wanted = _prefixes(prefixes)
    named = list(module.named_parameters())
    for prefix in wanted:
        if not any(_under(name, prefix) for name, _ in named):
            raise _unknown(module, prefix)
    frozen = []
    for name, parameter in named:
        if any(_under(name, prefix) for prefix in wanted):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def frozen_modules(module: nn.Module, prefixes: str | Sequence[str]) -> list[nn.Module]:
    """The submodules under ``prefixes`` (matched as in ``freeze``), outer ones first.

    Freezing parameters does not freeze BatchNorm's running statistics, which every forward pass
    in training mode updates: put these modules in eval mode after each ``module.train()`` to keep
    them as transferred. A prefix naming a parameter rather than a module contributes none; one
    naming neither is an error, as in ``freeze``.
    """
    wanted = _prefixes(prefixes)
    modules = [(name, sub) for name, sub in module.named_modules() if name]
    tensors = [name for name, _ in [*module.named_parameters(), *module.named_buffers()]]
    for prefix in wanted:
        if not any(_under(name, prefix) for name in [*(n for n, _ in modules), *tensors]):
            raise _unknown(module, prefix, "submodule or parameter")
    return [sub for name, sub in modules if any(_under(name, prefix) for prefix in wanted)]
