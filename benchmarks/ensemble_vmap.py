#!/usr/bin/env python
"""K ensemble members trained one after another, or as one batched model (torch.func.vmap)?

The ensemble stage trains its members one after another. The alternative is to stack the K
members' weights (``torch.func.stack_module_state``) and run one vmapped training step over
all of them (``functional_call`` under ``vmap``, BatchNorm buffers stacked too). This script
times a training step of tandem's default ``cnn`` (USPS's 16x16 images, AdamW, random data:
the step's cost does not depend on the values) both ways, side by side in one process, and
prints ms per step for all K members and the ratio. Sequential is kept unless vmap is faster.

    python benchmarks/ensemble_vmap.py                   # K = 2, 3, 5 at batch 64, CPU
    python benchmarks/ensemble_vmap.py --batch 128 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from tandem.models import build_module


def members(k: int, device: str) -> list[nn.Module]:
    torch.manual_seed(0)
    return [build_module("cnn", 256, 10, image_shape=[16, 16]).to(device).train() for _ in range(k)]


def sequential_step(k: int, X, y, device: str):
    nets = members(k, device)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in nets]
    loss = nn.CrossEntropyLoss()

    def step() -> None:
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            loss(net(X), y).backward()
            opt.step()

    return step


def vmap_step(k: int, X, y, device: str):
    nets = members(k, device)
    skeleton = copy.deepcopy(nets[0]).to("meta")
    params, buffers = stack_module_state(nets)
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-3)
    loss = nn.CrossEntropyLoss()

    def one(p, b, x, t):
        return loss(functional_call(skeleton, (p, b), (x,)), t)

    batched = vmap(one, in_dims=(0, 0, None, None), randomness="different")

    def step() -> None:
        opt.zero_grad()
        batched(params, buffers, X, y).sum().backward()
        opt.step()

    return step


def timed(step, steps: int, device: str) -> float:
    for _ in range(3):  # warm-up
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    X = torch.randn(args.batch, 256, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    print(f"cnn on 16x16 images, batch {args.batch}, device {args.device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, median of {args.steps} "
          "steps\n")  # fmt: skip
    print("| members | sequential ms/step | vmap ms/step | vmap / sequential |")
    print("|---:|---:|---:|---:|")
    for k in args.members:
        seq = timed(sequential_step(k, X, y, args.device), args.steps, args.device)
        vec = timed(vmap_step(k, X, y, args.device), args.steps, args.device)
        print(f"| {k} | {seq:.1f} | {vec:.1f} | {vec / seq:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
