"""The training loop's parts: batches, the weighted loss, weight averaging and scores; devices,
seeding, data-parallel processes, augmentation and callbacks. The loop itself is the estimator's
(``tandem.estimators.loop``), as overridable steps.

Why a hand-written loop: the data of an sklearn ``fit`` is already in memory, so it is moved to the
device once, shuffled by an index permutation and sliced into batches. There is no per-row
``Dataset.__getitem__``, no collate step, and no host synchronisation inside an epoch: losses are
accumulated on the device and read once per epoch. That is what makes tandem faster than skorch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from tandem import models

EVAL_BATCH_SIZE = 4096


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the weights are garbage, so nothing may be saved."""


# --------------------------------------------------------------------------- data parallel
# Seconds a rank waits in a collective for the others before it gives up (a rank that died).
DDP_TIMEOUT_ENV = "TANDEM_DDP_TIMEOUT"


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (read from the variables torchrun sets)."""

    rank: int
    world_size: int
    local_rank: int


def distributed_env() -> Distributed | None:
    """The torchrun job this process belongs to, or None outside torchrun (or with one rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Distributed(
        int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))
    )


def is_main_process() -> bool:
    """True outside torchrun and on rank 0: the one process that writes files."""
    env = distributed_env()
    return env is None or env.rank == 0


def init_distributed(device: torch.device) -> Distributed | None:
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA) unless already joined."""
    env = distributed_env()
    if env is None:
        return None
    import torch.distributed as dist

    if device.type == "cuda":  # this rank's GPU is the default one (pinned copies, nccl)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(DDP_TIMEOUT_ENV, "120")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        import atexit

        atexit.register(_leave_process_group)
    return env


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Under DDP on CUDA, turn ``module``'s BatchNorm layers into SyncBatchNorm (in place, the
    same parameters and buffers): each batch is normalised with the statistics of the whole
    global batch, as in one process. torch's SyncBatchNorm runs on accelerators only: on the CPU
    (gloo) each rank normalises with its own share's statistics, and the running statistics
    that evaluation uses are rank 0's (DDP broadcasts the buffers at every step)."""
    if device.type != "cuda":
        return module
    for name, child in module.named_children():
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if synced is not child:
            setattr(module, name, synced)
    return module


def leave_together() -> None:
    """Under torchrun, once every rank has done its part (rank 0 its writing): wait for all
    ranks, then leave the process group on each. A rank that left on its own while another was
    still at work had gloo's connection threads torn down under the other, which aborted it
    ("terminate called without an active exception"). Outside torchrun: nothing. On an error
    this is not reached: the process group is left at exit, and torchrun stops the others."""
    import torch.distributed as dist

    if distributed_env() is None or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


CRASH_LINE = re.compile(r"\w+(Error|Exception): ")  # an exception's last line, unqualified


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run ``python -m <argv>`` under torchrun with ``nproc`` processes on this machine.

    torchrun watches its workers: when one dies, it stops the others and exits non-zero, so a
    failed rank ends the job instead of leaving the others waiting.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", *argv]  # fmt: skip
    env = dict(os.environ)  # torchrun would give each process one thread: share the cores out
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        sys.stderr.write(proc.stderr)
        return
    # the ranks' own one-line errors, once each, instead of torchrun's traceback of the launcher;
    # a rank that crashed outside tandem's handling (a C++ abort in the process group) says why
    # in its last words: "terminate called ...", "what(): ...", "RuntimeError: ..."
    errors = dict.fromkeys(
        line.split(": ", 1)[1] if line.startswith("error in ") else line
        for line in proc.stderr.splitlines()
        if line.startswith(("error", "  unexpected", "  try", "terminate called"))
        or "what():" in line
        or CRASH_LINE.match(line)
    )
    detail = "\n  ".join(errors) or "\n  ".join(proc.stderr.strip().splitlines()[-15:])
    raise ChildProcessError(
        f"data-parallel training with {nproc} processes failed (torchrun exit "
        f"{proc.returncode}):\n  {detail}"
    )


# --------------------------------------------------------------------------- devices and seeds
def resolve_device(device: str | torch.device = "auto", *, fallback: bool = False) -> torch.device:
    """ "auto" -> CUDA when available, else CPU. ``fallback`` maps an unavailable CUDA to CPU.

    Under torchrun, "auto" and a bare "cuda" mean this rank's own GPU, ``cuda:$LOCAL_RANK``.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if fallback:
            return torch.device("cpu")
        raise ValueError(f"device={device!r} was requested but CUDA is not available here")
    env = distributed_env()
    if env is not None and device.startswith("cuda"):  # one GPU per rank: its LOCAL_RANK
        if device != "cuda":
            raise ValueError(
                f"device={device!r} under torchrun would put every rank on one GPU; use 'auto' "
                "or 'cuda' (each rank then takes cuda:$LOCAL_RANK)"
            )
        if env.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"rank {env.rank} has LOCAL_RANK {env.local_rank} but this machine shows "
                f"{torch.cuda.device_count()} GPU(s): start at most that many processes per node"
            )
        return torch.device("cuda", env.local_rank)
    return torch.device(device)


def seed_from(random_state: Any) -> int:
    """An int seed from an sklearn-style ``random_state`` (None, int or RandomState)."""
    from sklearn.utils import check_random_state

    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state) % (2**32)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


# --------------------------------------------------------------------------- image augmentation
@dataclass(frozen=True)
class Augment:
    """Random affine transforms (and optionally elastic distortion) of a batch of flat image rows,
    drawn and applied on the device in a few batched ops: one ``affine_grid`` + ``grid_sample``
    per batch, never a loop over images. Ranges are symmetric: ``rotate`` and ``shear`` in
    degrees, ``translate`` as a fraction of the side, ``scale`` as a relative change; ``elastic``
    is the displacement in pixels of a random field smoothed over ``elastic_sigma`` pixels.
    Pixels pulled from outside the image repeat its border (the background)."""

    shape: tuple[int, int, int]
    rotate: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    elastic_sigma: float = 3.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch.nn.functional as F

        n, (c, h, w) = x.shape[0], self.shape
        if n == 0:
            return x
        images = x.reshape(n, c, h, w)
        u = torch.rand(n, 6, generator=generator, device=x.device) * 2 - 1  # uniform in [-1, 1]
        angle, shear = u[:, 0] * math.radians(self.rotate), u[:, 1] * math.radians(self.shear)
        zoom = 1 + u[:, 2] * self.scale
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # output -> input coordinates (normalised to [-1, 1]): rotation, shear, then zoom
        shift_x, shift_y = u[:, 3] * 2 * self.translate, u[:, 4] * 2 * self.translate
        rows = [torch.stack([cos, cos * tan - sin, shift_x], dim=1),
                torch.stack([sin, sin * tan + cos, shift_y], dim=1)]  # fmt: skip
        theta = torch.stack(rows, dim=1)
        theta[:, :, :2] /= zoom[:, None, None]
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        if self.elastic:
            grid = grid + self._displacement(n, h, w, x.device, generator)
        out = F.grid_sample(images, grid.to(x.dtype), padding_mode="border", align_corners=False)
        return out.reshape(n, -1)

    def _displacement(self, n, h, w, device, generator) -> torch.Tensor:
        import torch.nn.functional as F

        field = torch.rand(n, 2, h, w, generator=generator, device=device) * 2 - 1
        radius = max(1, int(3 * self.elastic_sigma))
        taps = torch.arange(-radius, radius + 1, device=device, dtype=field.dtype)
        kernel = torch.exp(-(taps**2) / (2 * self.elastic_sigma**2))
        kernel = (kernel / kernel.sum()).reshape(1, 1, -1)
        flat = field.reshape(n * 2, 1, h, w)  # separable Gaussian blur, both axes
        flat = F.conv2d(flat, kernel[..., None, :].expand(1, 1, 1, -1), padding=(0, radius))
        flat = F.conv2d(flat, kernel[..., :, None].expand(1, 1, -1, 1), padding=(radius, 0))
        field = flat.reshape(n, 2, h, w)
        field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        dx, dy = field[:, 0] * (2 * self.elastic / w), field[:, 1] * (2 * self.elastic / h)
        return torch.stack([dx, dy], dim=-1)  # pixels -> normalised units, (n, h, w, 2)


@torch.inference_mode()
def predict_tta(module: nn.Module, X: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Mean class probabilities over ``models.TTA_VIEWS`` (``models.ShiftAveraged``)."""
    return torch.softmax(predict_raw(models.ShiftAveraged(module, shape), X).double(), dim=1)


# --------------------------------------------------------------------------- callbacks
class Callback(Protocol):
    """Callbacks are plain objects; every hook is optional.

    - ``on_train_begin(estimator)``
    - ``on_epoch_end(estimator, record) -> bool | None``: return True to stop training
    - ``on_train_end(estimator)``
    """


def call(callbacks: Iterable[Any], hook: str, *args: Any) -> bool:
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(*args):
            stop = True
    return stop


class DVCLiveCallback:
    """Log every epoch's record to a ``dvclive.Live`` (one step per epoch)."""

    skip = ("epoch", "seconds")

    def __init__(self, live: Any):
        self.live = live

    def __deepcopy__(self, memo: dict) -> DVCLiveCallback:
        # a handle on one external logger: sklearn's clone (e.g. inside TransformedTargetRegressor
        # or GridSearchCV) must keep logging to the same Live, not copy it
        return self

    def on_epoch_end(self, estimator: Any, record: dict) -> None:
        for key, value in record.items():
            if key not in self.skip and value is not None:
                self.live.log_metric(key, value)
        self.live.next_step()


class PrintLog:
    """Print one line per epoch (what ``verbose=1`` adds)."""

    def on_epoch_end(self, estimator: Any, record: dict) -> None:
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
        print(" ".join(parts), flush=True)


# --------------------------------------------------------------------------- the loop's parts
@dataclass
class Batch:
    """Tensors of one data set, already on the device. ``w`` holds per-sample weights."""

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor

    def __len__(self) -> int:
        return self.X.shape[0]


def weighted_loss(criterion: nn.Module, out: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Sum of ``w * loss`` over the rows (the criterion has ``reduction='none'``)."""
    losses = criterion(out, y)
    if losses.dim() > 1:
        losses = losses.reshape(losses.shape[0], -1).mean(dim=1)
    return (losses * w).sum()


def n_steps(n: int, batch_size: int, world: int = 1) -> int:
    """Batches per epoch. A trailing batch that would give a rank fewer than two rows is skipped
    (BatchNorm cannot train on one row; an empty share cannot be transformed)."""
    steps, rest = divmod(n, batch_size)
    return steps + (1 if rest >= 2 * world or (rest and steps == 0) else 0)


def fit_length(
    n: int, batch_size: int | str, max_epochs: int, min_steps: int = 0
) -> tuple[int, int]:
    """``(batch_size, epochs)`` that suit ``n`` training rows: ``batch_size="auto"`` is about n/64
    rounded down to a power of 2, between 16 and 256 (so an epoch is about 64 steps, fewer on a
    large set); ``epochs`` is ``max_epochs``, raised until the fit takes ``min_steps`` steps, so
    that a small set still gets enough optimizer steps."""
    if batch_size == "auto":
        batch_size = 2 ** int(math.log2(max(n // 64, 1)))
        batch_size = min(256, max(16, batch_size))
    elif not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
    steps = max(math.ceil(n / batch_size), 1)
    return batch_size, max(max_epochs, math.ceil(min_steps / steps))


@torch.inference_mode()
def predict_raw(module: nn.Module, X: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE):
    """Module outputs for all rows, in large batches, in eval mode."""
    was_training = module.training
    module.eval()
    try:
        outs = [module(X[i : i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    finally:
        module.train(was_training)
    return torch.cat(outs) if outs else X.new_zeros((0,))


class WeightAverage:
    """An exponential moving average of a module's floating-point state (weights and BatchNorm
    statistics), updated in place on the device after every optimizer step; no host sync. The
    decay warms up as min(decay, (1 + t) / (10 + t)) so that early averages follow the weights."""

    def __init__(self, module: nn.Module, decay: float):
        self.module, self.decay = module, float(decay)
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self._state

    @state.setter
    def state(self, state: dict[str, torch.Tensor]) -> None:
        # (average, live) tensor pairs, looked up once: the module's tensors are updated in place
        self._state = state
        live = self.module.state_dict()
        self._pairs = [(state[k], live[k].detach()) for k in state]

    @torch.no_grad()
    def update(self, t: int) -> None:
        weight = 1 - min(self.decay, (1 + t) / (10 + t))
        for average, value in self._pairs:
            if value.is_floating_point():
                average.lerp_(value, weight)
            else:
                average.copy_(value)

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the module for the block (evaluation), then the live ones."""
        live = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.state)
        try:
            yield
        finally:
            self.module.load_state_dict(live)


def check_finite(record: dict, epoch: int) -> None:
    """Stop with an error naming the epoch when a loss is NaN or infinite (a diverged model
    must not be saved, and its metrics would be null)."""
    for key in ("train_loss", "valid_loss"):
        value = record.get(key)
        if value is not None and not np.isfinite(value):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: {key} is {value} at learning rate "
                f"{record['lr']:.3g}. Try a lower lr (the estimator's lr, params.yaml's "
                f"train.lr), e.g. {record['lr'] / 10:.3g}, or look for extreme values in the "
                "features or the target."
            )


# Scores weigh each row by its sample weight, as the loss beside them does (and as sklearn's
# accuracy_score and r2_score do with sample_weight).
def accuracy(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    hits = (out.argmax(dim=1) == y).float()
    return (hits * w).sum() / w.sum().clamp_min(1e-12)


def r2(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    y2 = y.reshape(y.shape[0], -1)
    out2 = out.reshape(y2.shape)
    w2 = w.reshape(-1, 1)
    mean = (w2 * y2).sum(dim=0) / w.sum().clamp_min(1e-12)
    ss_res = (w2 * (y2 - out2) ** 2).sum(dim=0)
    ss_tot = (w2 * (y2 - mean) ** 2).sum(dim=0).clamp_min(1e-12)
    return (1 - ss_res / ss_tot).mean()
