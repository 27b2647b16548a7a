"""Torch modules by name.

Every module here takes flat float input of shape ``(N, n_features)`` so that it can sit after any
scikit-learn transformer; image networks reshape internally. ``build_module`` is the one place that
turns a name plus keyword arguments into an ``nn.Module``.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
}

INITS: dict[str, Callable[[torch.Tensor], object]] = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_module(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``f(n_features, n_outputs, **kwargs) -> nn.Module`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return decorator


def registered_modules() -> list[str]:
    return sorted(_REGISTRY)


def nearest_hint(name: object, options: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options``, or an empty string."""
    near = difflib.get_close_matches(str(name), list(options), n=1)
    return f" Did you mean {near[0]!r}?" if near else ""


def _choice(kind: str, value: str, options: Sequence[str]) -> str:
    if value in options:
        return value
    hint = nearest_hint(value, options)
    raise ValueError(f"Unknown {kind} {value!r}; choose one of {sorted(options)}.{hint}")


def keyword_arguments(fn: Any, skip: Collection[str] = ()) -> list[str] | None:
    """The keyword arguments a class or callable takes, less ``skip``; None when it takes
    ``**kwargs`` (anything) or has no signature to read. The one place signatures are read."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [
        name
        for name, p in params.items()
        if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)
    ]


def accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name``."""
    names = keyword_arguments(fn)
    return names is None or name in names


def is_reference(name: object) -> bool:
    """``nets/tiny.py:TinyNet`` (a file of the project) or ``package.module:Class``: a user's
    own module class, as against a registered name."""
    return isinstance(name, str) and ":" in name


def import_reference(reference: str, root: str | Path = ".") -> type[nn.Module]:
    """The ``nn.Module`` class a reference names: ``path/to/file.py:Class``, a file under
    ``root`` (the project), or ``package.module:Class``, an importable module. Only an
    ``nn.Module`` subclass is returned; anything else is refused, naming what is wrong."""
    import importlib
    import importlib.util

    where, _, name = reference.rpartition(":")
    if not where or not name.isidentifier():
        raise ValueError(f"module {reference!r}: expected FILE.py:Class or package.module:Class")
    if where.endswith(".py"):
        base = Path(root).resolve()
        path = (base / where).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise ValueError(f"module {reference!r}: no file {where} in the project ({base})")
        key = "tandem_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(key, path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    else:
        try:
            loaded = importlib.import_module(where)
        except ImportError as exc:
            raise ValueError(f"module {reference!r}: cannot import {where} ({exc})") from None
    found = getattr(loaded, name, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        own = [v for v in vars(loaded).values() if getattr(v, "__module__", "") == loaded.__name__]
        classes = sorted(
            v.__name__ for v in own if isinstance(v, type) and issubclass(v, nn.Module)
        )
        what = (
            "no such name" if found is None else f"a {type(found).__name__}, not an nn.Module class"
        )
        raise ValueError(
            f"module {reference!r}: {name} is {what}; its nn.Module classes: {classes}"
        )
    return found


def _builder(name: str) -> Callable[..., nn.Module]:
    """What builds module ``name``: a reference's class, or a registered builder."""
    if is_reference(name):
        return import_reference(name)
    _choice("module", name, list(_REGISTRY))
    return _REGISTRY[name]


def module_arguments(name: str) -> list[str] | None:
    """The keyword arguments module ``name`` accepts (``module__<arg>``); None: any (``**kw``)."""
    return keyword_arguments(_builder(name), ("n_features", "n_outputs"))


def check_arguments(name: str, given: Collection[str]) -> None:
    """Refuse, before anything is built, a module that cannot be called with the keyword
    arguments ``given`` (n_features, n_outputs, the image's shape, its module_kwargs): one it
    does not take, or one it needs that is not given."""
    params = inspect.signature(_builder(name)).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in given if k not in params and not takes_any]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    needed = [k for k, p in params.items() if p.default is p.empty and p.kind in kinds]
    needed = [k for k in needed if k not in given]
    if unknown or needed:
        problems = [f"it takes no {unknown}"] * bool(unknown) + [f"it needs {needed}"] * bool(
            needed
        )
        raise ValueError(
            f"module {name!r} cannot be built with {sorted(given)}: {'; '.join(problems)}"
        )


def build_module(name: str, n_features: int, n_outputs: int, **kwargs) -> nn.Module:
    """Build module ``name`` (registered, or a reference to a user's class) for ``n_features``
    inputs and ``n_outputs`` outputs, with its keyword arguments."""
    builder = _builder(name)
    valid = keyword_arguments(builder, ("n_features", "n_outputs"))
    for key in kwargs if valid is not None else ():
        if key not in valid:  # a misspelt module__* argument names itself and the nearest valid one
            hint = nearest_hint(key, valid)
            raise ValueError(f"Unknown argument {key!r} for module {name!r}; valid: {valid}.{hint}")
    return builder(n_features=int(n_features), n_outputs=int(n_outputs), **kwargs)


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[_choice("activation", name, list(ACTIVATIONS))]()


def apply_init(module: nn.Module, init: str | None) -> nn.Module:
    """Re-initialise every linear and conv layer's weights (biases to zero); None keeps torch's."""
    if init is None:
        return module
    fn = INITS[_choice("init", init, list(INITS))]
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            fn(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def image_dims(
    n_features: int,
    image_shape: Sequence[int] | None = None,
    channels: int = 1,
    *,
    where: str = "",
    hint: str = "give module__image_shape=[height, width] (and module__in_channels)",
) -> tuple[int, int, int]:
    """(channels, height, width) of flat image rows (channel-major): ``image_shape`` (height,
    width) when given, else a square one-channel image (256 features -> 1 x 16 x 16). Each side
    must be at least 4 (two 2x2 poolings); ``where`` prefixes the error, ``hint`` ends it."""
    if image_shape is None:
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"{where}{n_features} features are not a square one-channel image; {hint}"
            )
        image_shape, channels = (side, side), 1
    height, width = (int(d) for d in image_shape)
    if channels * height * width != n_features or min(height, width) < 4:
        raise ValueError(
            f"{where}image_shape {[height, width]} x {channels} channel(s) does not hold "
            f"{n_features} features (each side must be at least 4)"
        )
    return int(channels), height, width


def image_shape(n_features: int, shape: Sequence[int] | None = None) -> tuple[int, int, int]:
    """(channels, height, width) of flat image rows: ``shape`` as (H, W) or (C, H, W), else a
    square one-channel image (256 features -> 1 x 16 x 16)."""
    channels, dims = 1, None if shape is None else [int(d) for d in shape]
    if dims is not None and len(dims) == 3:
        channels, dims = dims[0], dims[1:]
    if dims is not None and len(dims) != 2:
        raise ValueError(f"image shape {list(shape)} must be [height, width] or [c, h, w]")
    return image_dims(
        n_features, dims, channels,
        hint="give the image shape (augment__shape=[height, width] or [channels, height, width])",
    )  # fmt: skip


class Reshape(nn.Module):
    """Flat rows -> (N, C, H, W) images."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


@register_module("usps_cnn")
def usps_cnn(
    n_features: int,
    n_outputs: int,
    *,
    activation: str = "relu",
    dropout: float = 0.2,
    init: str | None = None,
    image_shape: Sequence[int] | None = None,
    in_channels: int = 1,
) -> nn.Module:
    """The reference USPS network: conv 32-64-128 (3x3, pad 1), pool after the first two, FC 256."""
    c, height, width = image_dims(n_features, image_shape, in_channels, where="module 'usps_cnn': ")
    act = lambda: make_activation(activation)  # noqa: E731
    flat = 128 * (height // 4) * (width // 4)
    net = nn.Sequential(
        Reshape(c, height, width),
        nn.Conv2d(c, 32, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), act(),
        nn.Flatten(),
        nn.Linear(flat, 256), act(), nn.Dropout(dropout),
        nn.Linear(256, n_outputs),
    )  # fmt: skip
    return apply_init(net, init)


@register_module("cnn")
def cnn(
    n_features: int,
    n_outputs: int,
    *,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    head: str = "dense",
    activation: str = "relu",
    dropout: float = 0.3,
    init: str | None = None,
    image_shape: Sequence[int] | None = None,
    in_channels: int = 1,
) -> nn.Module:
    """A batch-norm image network: one block of (conv-BN-act) x2 per width in ``channels``, with a
    2x2 max-pool between blocks, then a head. ``head="dense"`` pools the last block too and
    flattens it into a hidden layer of ``hidden`` units; ``head="global"`` keeps each channel's
    largest response over the image (no hidden layer: ``hidden`` is not used), so a third block
    of a 16x16 image still sees 4x4. ``in_channels`` is the image's (1 grey, 3 RGB)."""
    c_in, height, width = image_dims(n_features, image_shape, in_channels, where="module 'cnn': ")
    head = _choice("cnn head", head, ("dense", "global"))
    widths = [int(c) for c in channels]
    if not widths or min(widths) < 1:
        raise ValueError(f"cnn: channels must be one or more positive widths, got {channels!r}")
    pools = len(widths) - (head == "global")
    if min(height, width) < 2**pools:
        raise ValueError(
            f"cnn: a {height}x{width} image is too small for {len(widths)} blocks with a "
            f"{head} head ({pools} 2x2 poolings need sides of at least {2**pools})"
        )
    layers: list[nn.Module] = [Reshape(c_in, height, width)]
    for i, c in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
            layers.append(make_activation(activation))
            c_in = c
    if head == "global":
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        layers.append(nn.Linear(c_in, n_outputs))
    else:
        side = 2 ** len(widths)
        layers += [
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in * (height // side) * (width // side), hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        ]
    return apply_init(nn.Sequential(*layers), init)


@register_module("mlp")
def mlp(
    n_features: int,
    n_outputs: int,
    *,
    hidden_sizes: Sequence[int] = (128,),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    init: str | None = None,
) -> nn.Module:
    """Tabular MLP for classification (logits) and regression (raw outputs)."""
    if isinstance(hidden_sizes, int):
        hidden_sizes = (hidden_sizes,)
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_sizes:
        layers.append(nn.Linear(width, int(size)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(size)))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    layers.append(nn.Linear(width, n_outputs))
    return apply_init(nn.Sequential(*layers), init)


# The deterministic views test-time augmentation averages: the image and one-pixel shifts left,
# right, up and down, (dx, dy) in pixels.
TTA_VIEWS: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


class ShiftAveraged(nn.Module):
    """Test-time augmentation as a network: ``module`` applied to the image and each of its
    ``TTA_VIEWS`` (shifted with border padding), class probabilities averaged over the views.

    It returns the log of the mean probabilities, so that a softmax of its output gives them back:
    everything that treats a classifier's output as logits (predict, ONNX export and its parity
    check, serve) runs the augmented model unchanged. One graph, so exporting it serves exactly
    what evaluate scores.
    """

    def __init__(self, module: nn.Module, shape: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.shape = tuple(int(s) for s in shape)  # (channels, height, width)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        images = X.reshape(X.shape[0], c, h, w)
        padded = nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
        views = [padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].reshape(X.shape[0], -1)
                 for dx, dy in TTA_VIEWS]  # fmt: skip
        proba = torch.stack([torch.softmax(self.module(v).float(), dim=1) for v in views])
        return torch.log(proba.mean(dim=0).clamp_min(torch.finfo(torch.float32).tiny))
