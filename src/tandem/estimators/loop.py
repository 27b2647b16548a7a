"""The training loop, as small overridable steps on the estimator (skorch's and Lightning's way).

``fit`` prepares a ``Run`` (the fit's fixed parts: rows, optimizer, schedule, ...) and a
``LoopState`` (what changes from epoch to epoch and a checkpoint stores), then ``run_epochs``
calls, for every epoch:

- ``train_mode()``: the module in training mode;
- ``iter_batches(run, epoch)``: the epoch's batches (a seeded permutation, this rank's share
  under DDP, augmentation);
- ``train_step(run, batch)``: forward, ``get_loss``, backward, optimizer and schedule step;
- ``validation_step(run)``: the validation loss and score, with ``get_loss`` too;
- ``early_stopping(run, state, record)``: whether to stop, keeping the best weights.

``get_loss(y_pred, y_true, sample_weight)`` is the one place the loss is computed: override it
(a focal loss, a penalty) and training, validation, checkpoints and DDP all use it. Every
number stays on the device within an epoch: the loop syncs with the host once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from tandem import training
from tandem.training import Batch, Distributed, WeightAverage


@dataclass
class LoopState:
    """What the loop carries from epoch to epoch; a checkpoint stores it (``as_dict``)."""

    history: list[dict] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # early stopping's weights (a copy)
    bad: int = 0  # epochs since the monitored loss last improved
    stopped: bool = False
    ema: dict[str, torch.Tensor] | None = None  # the weight average, when ``ema`` is on

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoopState:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


@dataclass
class Run:
    """One fit's fixed parts, built by ``fit`` before the first epoch."""

    train: Batch
    valid: Batch | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    forward: Callable  # the module, or its DDP / compiled wrapper
    batch_size: int
    steps: int  # batches per epoch
    epochs: range
    generator: torch.Generator  # the permutation of every epoch
    seed: int
    patience: int | None
    callbacks: list = field(default_factory=list)
    checkpoint: Callable[[dict], None] | None = None
    augment: training.Augment | None = None
    average: WeightAverage | None = None
    dist: Distributed | None = None
    amp: bool = False

    @property
    def rank(self) -> int:
        return 0 if self.dist is None else self.dist.rank

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world_size


@dataclass
class Step:
    """One batch of this rank: rows, targets, weights, and ``weight``, the whole batch's total
    weight (over all ranks' shares, divided by the number of ranks) that the loss is scaled by."""

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    weight: torch.Tensor


class TrainingSteps:
    """The loop's steps (a mixin of ``TorchEstimatorBase``); each may be overridden."""

    def get_loss(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, sample_weight: torch.Tensor
    ) -> torch.Tensor:
        """The batch's loss: the sum over its rows of ``sample_weight * loss(row)``, a scalar
        tensor. The loop divides it by the batch's total weight. The default is the criterion's
        (``criterion_``, built with ``reduction='none'``)."""
        return training.weighted_loss(self.criterion_, y_pred, y_true, sample_weight)

    def train_mode(self) -> None:
        """Put the module in training mode for an epoch; frozen parts keep their statistics."""
        self.module_.train()
        for part in getattr(self, "frozen_modules_", ()):
            part.eval()

    def iter_batches(self, run: Run, epoch: int) -> Iterator[Step]:
        """The epoch's batches: a permutation drawn from ``run.generator``; under DDP every rank
        draws the same one and takes rows r, r+W, ... of each global batch. Augmentation draws
        from a generator seeded by (seed, epoch, rank), so a resumed run draws the same."""
        train, device, rank, world = run.train, run.train.X.device, run.rank, run.world
        order = torch.randperm(len(train), generator=run.generator).to(device, non_blocking=True)
        epoch_seed = (run.seed * 1_000_003 + epoch * 1_009 + rank) % 2**63
        if world > 1:  # each rank its own dropout masks, the same again after a resume
            torch.manual_seed(epoch_seed)
        if run.augment is not None:
            augment_rng = torch.Generator(device=device).manual_seed(epoch_seed)
        bs = run.batch_size
        for step in range(run.steps):
            idx = order[step * bs : (step + 1) * bs]
            if world > 1:  # this rank's share; the loss is scaled by the whole batch's weight
                weight = train.w[idx].sum() / world
                idx = idx[rank::world]
            xb, yb, wb = train.X[idx], train.y[idx], train.w[idx]
            if world == 1:
                weight = wb.sum()
            if run.augment is not None:
                xb = run.augment(xb, augment_rng)
            yield Step(xb, yb, wb, weight)

    def train_step(self, run: Run, batch: Step) -> torch.Tensor:
        """Forward, loss, backward and one optimizer (and schedule) step; returns the batch's
        weighted loss sum, detached (it stays on the device)."""
        use_amp = run.amp and batch.X.device.type == "cuda"
        with torch.autocast(batch.X.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = run.forward(batch.X)
        batch_loss = self.get_loss(out.float(), batch.y, batch.w)
        loss = batch_loss / batch.weight.clamp_min(1e-12)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        return batch_loss.detach()

    @torch.inference_mode()
    def validation_step(self, run: Run) -> dict[str, torch.Tensor]:
        """The weighted mean loss (``get_loss``) and score on the validation rows."""
        valid = run.valid
        out = training.predict_raw(self.module_, valid.X).float()
        loss = self.get_loss(out, valid.y, valid.w) / valid.w.sum().clamp_min(1e-12)
        score = self._score_fn(out, valid.y, valid.w)
        return {"valid_loss": loss, f"valid_{self._score_name}": score}

    def early_stopping(self, run: Run, state: LoopState, record: dict, weights: Any) -> bool:
        """With ``patience``: keep ``weights`` when the monitored loss (validation, else
        training) improved, and stop after ``patience`` epochs without improving."""
        if run.patience is None:
            return False
        monitored = record.get("valid_loss", record["train_loss"])
        if monitored < state.best_loss:
            state.best_loss, state.best_epoch, state.bad = monitored, record["epoch"], 0
            state.best_state = weights
            return False
        state.bad += 1
        return state.bad >= run.patience

    def train_epoch(self, run: Run, epoch: int) -> tuple[dict[str, Any], dict | None]:
        """One epoch: every batch, then validation (with the averaged weights under ``ema``);
        the epoch's record and, with ``patience``, the weights early stopping would keep."""
        start, device = time.perf_counter(), run.train.X.device
        self.train_mode()
        loss_sum = torch.zeros((), device=device)
        seen_w = torch.zeros((), device=device)  # the weight of the rows this epoch trained on
        lr = run.optimizer.param_groups[0]["lr"]
        for step, batch in enumerate(self.iter_batches(run, epoch)):
            loss_sum += self.train_step(run, batch)
            if run.average is not None:
                run.average.update((epoch - 1) * run.steps + step)
            seen_w += batch.weight.detach() * run.world  # every rank adds the batch's weight
        if run.world > 1:  # one collective per epoch: the training loss over all ranks' rows
            torch.distributed.all_reduce(loss_sum)
        train_loss = float(loss_sum) / max(float(seen_w), 1e-12)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        weights = None
        with run.average.applied() if run.average is not None else contextlib.nullcontext():
            if run.valid is not None and len(run.valid):
                record.update({k: float(v) for k, v in self.validation_step(run).items()})
            if run.patience is not None:  # the weights early stopping would keep (a copy)
                weights = {k: v.detach().clone() for k, v in self.module_.state_dict().items()}
        record["lr"] = float(lr)
        record["seconds"] = time.perf_counter() - start
        return record, weights

    def run_epochs(self, run: Run, state: LoopState) -> LoopState:
        """Train for ``run.epochs``, going on from ``state`` (a resumed checkpoint's records are
        replayed to the callbacks first, so loggers see every epoch once). Callbacks and the
        checkpoint run on rank 0, whose decision to stop every rank follows. At the end the
        module holds early stopping's best weights, else the weight average under ``ema``."""
        main = run.rank == 0
        callbacks = run.callbacks if main else ()
        training.call(callbacks, "on_train_begin", self)
        try:
            if run.average is not None and state.ema is not None:
                run.average.state = state.ema
            for record in state.history:
                training.call(callbacks, "on_epoch_end", self, record)
            for epoch in run.epochs:
                record, weights = self.train_epoch(run, epoch)
                training.check_finite(record, epoch)  # before callbacks, checkpoint or best
                state.history.append(record)
                stop = self.early_stopping(run, state, record, weights)
                stop = training.call(callbacks, "on_epoch_end", self, record) or stop
                if run.world > 1:  # rank 0's callbacks may stop training: every rank follows
                    flag = torch.tensor([float(stop)], device=run.train.X.device)
                    torch.distributed.broadcast(flag, src=0)
                    stop = bool(flag.item())
                state.stopped = stop
                state.ema = None if run.average is None else run.average.state
                if run.checkpoint is not None and main:
                    run.checkpoint(state.as_dict())
                if stop:
                    break
            if state.best_state is not None:
                self.module_.load_state_dict(state.best_state)
            elif run.average is not None:
                self.module_.load_state_dict(run.average.state)
        finally:  # every exit, an error included, ends the callbacks (a progress bar stops)
            training.call(callbacks, "on_train_end", self)
        return state
