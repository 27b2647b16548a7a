"""Data-parallel fits under torchrun: every rank holds all rows, draws the same permutation and
trains on its share of each global batch (``loop.TrainingSteps.iter_batches``); DDP averages the
gradients. Outside torchrun nothing here does anything."""

from __future__ import annotations

import torch
from torch import nn

from tandem import training
from tandem.training import Distributed


def start(n_rows: int, batch_size: int, device: torch.device) -> Distributed | None:
    """Join torchrun's process group (None outside torchrun), checking that every rank was
    given the same number of rows and that the global batch gives each rank two rows."""
    dist = training.init_distributed(device)
    if dist is None:
        return None
    check_same_rows(n_rows, device)
    if batch_size < 2 * dist.world_size:
        raise ValueError(
            f"batch_size={batch_size} is the global batch: with {dist.world_size} ranks it must "
            f"be at least {2 * dist.world_size} (two rows per rank)"
        )
    return dist


def wrap(module: nn.Module, device: torch.device, dist: Distributed | None) -> nn.Module:
    """The module to call forward on: under DDP wrapped so that gradients are averaged over the
    ranks (rank 0's weights go to all), BatchNorm synchronised on CUDA."""
    if dist is None:
        return module
    training.sync_batchnorm(module, device)
    return nn.parallel.DistributedDataParallel(
        module, device_ids=None if device.type == "cpu" else [device]
    )


def check_same_rows(n: int, device: torch.device) -> None:
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
