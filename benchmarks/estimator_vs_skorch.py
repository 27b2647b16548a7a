#!/usr/bin/env python
"""tandem's TorchClassifier vs skorch's NeuralNetClassifier vs a plain torch loop, on USPS.

Every run trains the ``usps_cnn`` network (built
by ``tandem.models.build_module`` from the same seed, so every run starts from the same weights)
with Adam, lr 1e-3, batch 32, a 20 % stratified validation slice of the training split evaluated
after every epoch, no early stopping, ``--epochs`` epochs. The report separates two things:

(a) Loop overhead. ``plain``, ``tandem`` and ``skorch`` run with the *same kernels*: the ones tandem
    picks by itself for a conv net ("tuned": ``torch.optim.Adam(fused=True)``; module weights in
    channels-last memory format on the CPU, contiguous NCHW on CUDA). All three get the same input
    (the same float32, C-contiguous ``(N, 256)`` array; the module reshapes it to
    ``(N, 1, 16, 16)``) and validate in batches of the same size, ``EVAL_BATCH`` (=
    ``tandem.training.EVAL_BATCH_SIZE``, 4096; skorch via ``iterator_valid__batch_size``). Their
    s/epoch ratios to the plain loop are then pure loop overhead.
(b) Kernel choice. The same loops with other kernels: ``<runner>-unfused`` keeps the layout but
    uses Adam's default (non-fused) implementation; ``<runner>-default`` is torch's defaults
    (non-fused Adam, contiguous NCHW weights) -- ``skorch-default`` is skorch out of the box.
    Each is compared with the same runner's tuned row: the gain from kernel choice alone.
    (tandem always makes a conv net channels-last on the CPU, so it has no ``-default`` row there.)

The runners, as built by ``build_plain``, ``build_tandem`` and ``build_skorch``:

- tandem: ``TorchClassifier(module="usps_cnn", optimizer="adam", optimizer__fused=...)``;
  s/epoch from ``est.history_[i]["seconds"]``.
- skorch: ``NeuralNetClassifier`` around the already placed module, ``optimizer=torch.optim.Adam``,
  ``optimizer__fused=...``, ``ValidSplit(0.2, stratified=True)``, shuffled training batches
  (skorch's default is not to shuffle; the others do), ``iterator_valid__batch_size=EVAL_BATCH``;
  s/epoch from ``net.history[:, "dur"]``. Labels are encoded to int64 for skorch, as its docs
  require, and its predictions decoded back.
- plain: tensors preloaded on the device, ``randperm`` shuffle, slices of 32 rows, Adam + CE, the
  validation pass in ``EVAL_BATCH`` chunks under ``inference_mode`` and one host sync per epoch;
  s/epoch from ``perf_counter`` around each epoch (training and validation, as for the others).

What each run really used is read back from it, not assumed: the optimizer's ``fused`` flag and lr,
the weights' memory format, and (through a forward pre-hook during the first epoch only) the dtype,
shape and contiguity of the training input and the validation batch sizes the network saw. These
go into ``--json`` under ``observed``. Where fused Adam is not available on the device, every run
falls back to the default Adam implementation and the script says so.

Data: USPS (OpenML data id 41070) from the offline OpenML cache. By default the shared cache
(``../shared/data/openml-cache``) is copied to a temporary folder first, since scikit-learn deletes
cache files it fails to parse; ``--data-home`` or ``SCIKIT_LEARN_DATA`` name a cache to use instead.
The split is stratified, test_size 0.3, random_state 11; features stay float32 in [-1, 1].

    python benchmarks/estimator_vs_skorch.py --epochs 3
    python benchmarks/estimator_vs_skorch.py --epochs 1 --subset 600      # quick smoke run
    python benchmarks/estimator_vs_skorch.py --methods plain,tandem,skorch  # table (a) only
    python benchmarks/estimator_vs_skorch.py --device cuda --epochs 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from _usps import USPS_ID, load_usps
from sklearn.model_selection import StratifiedShuffleSplit, train_test_split
from sklearn.preprocessing import LabelEncoder
from torch import nn

from tandem import TorchClassifier, training
from tandem.models import build_module

MODULE = "usps_cnn"
LR = 1e-3
BATCH = 32
VALID_FRACTION = 0.2
TEST_SIZE = 0.3
SPLIT_SEED = 11
# validation (and prediction) batch of all three runners: tandem's, which is not a parameter
EVAL_BATCH = training.EVAL_BATCH_SIZE

# The targets this benchmark checks (on the rows with identical kernels).
TARGET_VS_PLAIN = 1.10  # tandem s/epoch <= 1.10 x plain loop
TARGET_VS_SKORCH = 1.2  # skorch s/epoch >= 1.2 x tandem


# --------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class Kernels:
    """The kernel choices of one run: Adam's implementation and the weights' memory format."""

    fused: bool  # torch.optim.Adam(fused=...); False = Adam's default (for-loop/foreach) code
    channels_last: bool  # module weights in channels-last memory format

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "NCHW"
        return f"Adam fused={self.fused}, {layout}"


def fused_adam_available(device: torch.device) -> tuple[bool, str | None]:
    """(whether ``Adam(fused=True)`` builds and steps on ``device``, why not)."""
    try:
        p = torch.zeros(4, device=device, requires_grad=True)
        opt = torch.optim.Adam([p], lr=LR, fused=True)
        p.grad = torch.ones_like(p)
        opt.step()
    except (RuntimeError, TypeError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, None


def kernel_configs(device: torch.device, fused_ok: bool | None = None) -> dict[str, Kernels]:
    """``tuned``: what tandem picks for a conv net on ``device`` (fused Adam where available,
    channels-last weights on the CPU); ``unfused``: the same layout, default Adam; ``default``:
    torch's defaults (default Adam, contiguous NCHW weights)."""
    if fused_ok is None:
        fused_ok = fused_adam_available(device)[0]
    cl = device.type == "cpu"
    return {
        "tuned": Kernels(fused=fused_ok, channels_last=cl),
        "unfused": Kernels(fused=False, channels_last=cl),
        "default": Kernels(fused=False, channels_last=False),
    }


# method name -> (runner, kernel config)
VARIANTS: dict[str, tuple[str, str]] = {
    "plain": ("plain", "tuned"),
    "tandem": ("tandem", "tuned"),
    "skorch": ("skorch", "tuned"),
    "plain-unfused": ("plain", "unfused"),
    "tandem-unfused": ("tandem", "unfused"),
    "skorch-unfused": ("skorch", "unfused"),
    "plain-default": ("plain", "default"),
    "tandem-default": ("tandem", "default"),  # only where it equals tandem-unfused (CUDA)
    "skorch-default": ("skorch", "default"),
}
DEFAULT_METHODS = "plain,tandem,skorch,plain-unfused,plain-default,tandem-unfused,skorch-default"


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {name} was asked for but CUDA is not available here")
    return torch.device(name)


def fresh_module(seed: int) -> nn.Module:
    """The usps_cnn network with the weights tandem's fit starts from (seeded the same way)."""
    torch.manual_seed(seed)
    return build_module(MODULE, 256, 10)


def place(module: nn.Module, kernels: Kernels, device: torch.device) -> nn.Module:
    """Move to ``device`` in the memory format of ``kernels`` (as tandem's ``_place`` does)."""
    module = module.to(device)
    if kernels.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def make_adam(params, kernels: Kernels) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=LR, fused=kernels.fused)


def as_input(X: np.ndarray) -> np.ndarray:
    """What every runner is given: float32, C-contiguous, flat ``(N, 256)`` rows."""
    return np.ascontiguousarray(X, dtype=np.float32)


def module_layout(module: nn.Module) -> str:
    """Memory format of the conv weights with more than one input channel."""
    ws = [p for p in module.parameters() if p.dim() == 4 and p.shape[1] > 1]
    if ws and all(w.is_contiguous(memory_format=torch.channels_last) for w in ws):
        return "channels_last"
    if all(w.is_contiguous() for w in ws):
        return "contiguous"
    return "mixed"


class InputProbe:
    """Forward pre-hook that records what the network is fed during the first epoch: the first
    training batch's dtype/shape/contiguity and the sizes of the validation batches. It removes
    itself at the first training batch after a validation pass (so it costs nothing later)."""

    def __init__(self):
        self.train_input: str | None = None
        self.valid_batches: list[int] = []
        self.handle = None

    def attach(self, module: nn.Module) -> InputProbe:
        self.handle = module.register_forward_pre_hook(self)
        return self

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        if module.training:
            if self.valid_batches:
                self.detach()
            elif self.train_input is None:
                kind = "contiguous" if x.is_contiguous() else f"strides {x.stride()}"
                dims = ", ".join(str(d) for d in x.shape[1:])
                dtype = str(x.dtype).removeprefix("torch.")
                self.train_input = f"{dtype} (*, {dims}) {kind} on {x.device.type}"
        else:
            self.valid_batches.append(int(x.shape[0]))

    def facts(self) -> dict:
        self.detach()
        return {"train_input": self.train_input, "valid_batches": list(self.valid_batches)}


def observed(module: nn.Module, optimizer: torch.optim.Optimizer, probe: InputProbe,
             valid_batch_size: int) -> dict:  # fmt: skip
    """What a run really used, read back from its module and optimizer."""
    return {
        "optimizer": type(optimizer).__name__,
        "adam_fused": bool(optimizer.defaults.get("fused")),
        "lr": float(optimizer.param_groups[0]["lr"]),
        "layout": module_layout(module),
        "valid_batch_size": int(valid_batch_size),
        **probe.facts(),
    }


def warm_up(device: torch.device, X: np.ndarray, kernels: Kernels, steps: int = 20) -> None:
    """A few untimed training steps so that no method pays the one-off kernel/allocator setup."""
    module, opt = build_plain(kernels, device=device, seed=12345)
    xb = torch.as_tensor(as_input(X[:BATCH]), device=device)
    yb = torch.zeros(BATCH, dtype=torch.long, device=device)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(module(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.inference_mode():
        module.eval()
        module(torch.as_tensor(as_input(X[:2048]), device=device))
    sync(device)


# --------------------------------------------------------------------------- building the runners
def build_plain(kernels: Kernels, *, device: torch.device, seed: int):
    """(module, optimizer) of the plain loop."""
    module = place(fresh_module(seed), kernels, device)
    return module, make_adam(module.parameters(), kernels)


def build_tandem(kernels: Kernels, *, epochs: int, device: torch.device, seed: int):
    """tandem's estimator; ``optimizer__fused`` is set explicitly (tandem's own default for a conv
    net is fused=True). tandem makes conv weights channels-last on the CPU, always."""
    if kernels.channels_last != (device.type == "cpu"):
        raise ValueError(
            f"tandem cannot run with {kernels.describe()} on {device.type}: it places conv nets "
            "channels-last on the CPU and NCHW on CUDA"
        )
    return TorchClassifier(
        module=MODULE,
        optimizer="adam",
        optimizer__fused=kernels.fused,
        lr=LR,
        batch_size=BATCH,
        max_epochs=epochs,
        validation_fraction=VALID_FRACTION,
        patience=None,
        device=str(device),
        random_state=seed,
    )


def build_skorch(kernels: Kernels, *, epochs: int, device: torch.device, seed: int):
    """skorch's net around the placed module (skorch uses a module instance as it is)."""
    from skorch import NeuralNetClassifier
    from skorch.dataset import ValidSplit

    return NeuralNetClassifier(
        module=place(fresh_module(seed), kernels, device),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        optimizer__fused=kernels.fused,
        lr=LR,
        batch_size=BATCH,
        max_epochs=epochs,
        train_split=ValidSplit(VALID_FRACTION, stratified=True, random_state=seed),
        iterator_train__shuffle=True,
        iterator_valid__batch_size=EVAL_BATCH,
        device=str(device),
        verbose=0,
    )


def skorch_valid_batch_size(net) -> int:
    return int(net.get_params_for("iterator_valid").get("batch_size", net.batch_size))


# --------------------------------------------------------------------------- the three runners
class _ProbeTandem:
    """tandem callback: attach the probe once fit has built ``module_``."""

    def __init__(self, probe: InputProbe):
        self.probe = probe

    def on_train_begin(self, estimator) -> None:
        self.probe.attach(estimator.module_)


def run_tandem(Xtr, ytr, Xte, yte, *, kernels, epochs, device, seed) -> dict:
    probe = InputProbe()
    est = build_tandem(kernels, epochs=epochs, device=device, seed=seed)
    est.set_params(callbacks=[_ProbeTandem(probe)])
    sync(device)
    start = time.perf_counter()
    est.fit(as_input(Xtr), ytr)
    sync(device)
    fit_wall = time.perf_counter() - start
    facts = observed(est.module_, est.optimizer_, probe, training.EVAL_BATCH_SIZE)
    test_acc = float(np.mean(est.predict(as_input(Xte)) == yte))
    last = est.history_[-1]
    return {
        "epoch_seconds": [float(h["seconds"]) for h in est.history_],
        "fit_seconds": fit_wall,
        "valid_acc": last.get("valid_accuracy"),
        "train_loss": last["train_loss"],
        "test_acc": test_acc,
        "observed": facts,
    }


def run_skorch(Xtr, ytr, Xte, yte, *, kernels, epochs, device, seed) -> dict:
    enc = LabelEncoder().fit(ytr)
    ytr_int = enc.transform(ytr).astype(np.int64)
    net = build_skorch(kernels, epochs=epochs, device=device, seed=seed)
    probe = InputProbe().attach(net.module)
    torch.manual_seed(seed)  # skorch's DataLoader shuffles with the global generator
    sync(device)
    start = time.perf_counter()
    net.fit(as_input(Xtr), ytr_int)
    sync(device)
    fit_wall = time.perf_counter() - start
    facts = observed(net.module_, net.optimizer_, probe, skorch_valid_batch_size(net))
    pred = enc.inverse_transform(net.predict(as_input(Xte)))
    return {
        "epoch_seconds": [float(d) for d in net.history[:, "dur"]],
        "fit_seconds": fit_wall,
        "valid_acc": float(net.history[-1, "valid_acc"]),
        "train_loss": float(net.history[-1, "train_loss"]),
        "test_acc": float(np.mean(pred == yte)),
        "observed": facts,
    }


def run_plain(Xtr, ytr, Xte, yte, *, kernels, epochs, device, seed) -> dict:
    enc = LabelEncoder().fit(ytr)
    y_all = enc.transform(ytr).astype(np.int64)
    split = StratifiedShuffleSplit(n_splits=1, test_size=VALID_FRACTION, random_state=seed)
    tr_idx, va_idx = next(split.split(np.zeros((len(y_all), 1)), y_all))

    module, optimizer = build_plain(kernels, device=device, seed=seed)
    probe = InputProbe().attach(module)
    criterion = nn.CrossEntropyLoss()
    Xtr = as_input(Xtr)
    X = torch.as_tensor(Xtr[tr_idx], device=device)
    y = torch.as_tensor(y_all[tr_idx], device=device)
    Xv = torch.as_tensor(Xtr[va_idx], device=device)
    yv = torch.as_tensor(y_all[va_idx], device=device)
    n = X.shape[0]
    generator = torch.Generator().manual_seed(seed)

    epoch_seconds, stats = [], [math.nan] * 3
    sync(device)
    fit_start = time.perf_counter()
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        module.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, n, BATCH):
            idx = order[i : i + BATCH]
            xb, yb = X[idx], y[idx]
            loss = criterion(module(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * idx.shape[0]
        module.eval()
        with torch.inference_mode():
            out = torch.cat([module(Xv[i : i + EVAL_BATCH]) for i in range(0, len(Xv), EVAL_BATCH)])
            v_loss = criterion(out, yv)
            v_acc = (out.argmax(dim=1) == yv).float().mean()
        stats = torch.stack([loss_sum / n, v_loss, v_acc]).tolist()  # the epoch's one host sync
        epoch_seconds.append(time.perf_counter() - start)
    fit_wall = time.perf_counter() - fit_start
    facts = observed(module, optimizer, probe, EVAL_BATCH)

    module.eval()
    Xt = torch.as_tensor(as_input(Xte), device=device)
    with torch.inference_mode():
        pred_idx = torch.cat(
            [module(Xt[i : i + EVAL_BATCH]).argmax(dim=1) for i in range(0, len(Xt), EVAL_BATCH)]
        )
    pred = enc.inverse_transform(pred_idx.cpu().numpy())
    return {
        "epoch_seconds": epoch_seconds,
        "fit_seconds": fit_wall,
        "valid_acc": stats[2],
        "train_loss": stats[0],
        "test_acc": float(np.mean(pred == yte)),
        "observed": facts,
    }


RUNNERS = {"plain": run_plain, "tandem": run_tandem, "skorch": run_skorch}


def run_method(name: str, Xtr, ytr, Xte, yte, *, configs: dict[str, Kernels], epochs, device,
               seed) -> dict:  # fmt: skip
    runner, config = VARIANTS[name]
    kernels = configs[config]
    r = RUNNERS[runner](Xtr, ytr, Xte, yte, kernels=kernels, epochs=epochs, device=device,
                        seed=seed)  # fmt: skip
    return {"method": name, "runner": runner, "config": config, "kernels": asdict(kernels), **r}


# --------------------------------------------------------------------------- report
def timed_epochs(seconds: list[float]) -> list[float]:
    """The epochs that count: all but the first when there are 3 or more."""
    return seconds[1:] if len(seconds) >= 3 else seconds


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) on Linux, else None.

    Their difference over a run is the CPU time that other processes took meanwhile: on a small
    shared machine, torch's OpenMP threads slow down many times over when another process wants
    the same cores, so a run with much foreign CPU time is not a clean measurement.
    """
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / hz, (int(fields[11]) + int(fields[12])) / hz  # utime + stime


def _foreign_cpu(before, after) -> float | None:
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def print_table(header: list[str], rows: list[list[str]], title: str):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=max(140, shutil.get_terminal_size().columns)).print(table)


def _ratio(a: float | None, b: float | None, fmt: str = ".3f") -> str:
    return f"{a / b:{fmt}}x" if a and b else "-"


def _acc(r: dict) -> str:
    acc = f"{r['test_acc_mean']:.4f}"
    if r["test_acc_sd"] is not None:
        acc += f" ± {r['test_acc_sd']:.4f}"
    return acc


def _summarise(rs: list[dict]) -> dict:
    eligible = [s for r in rs for s in timed_epochs(r["epoch_seconds"])]
    accs = [r["test_acc"] for r in rs]
    return {
        "runner": rs[0]["runner"],
        "config": rs[0]["config"],
        "kernels": rs[0]["kernels"],
        "observed": rs[0]["observed"],
        "s_per_epoch": statistics.median(eligible),
        "best_epoch_s": min(eligible),
        "epoch_seconds": [r["epoch_seconds"] for r in rs],
        "fit_seconds": [r["fit_seconds"] for r in rs],
        "other_cpu_s": [r["other_cpu_s"] for r in rs],
        "valid_acc": [r["valid_acc"] for r in rs],
        "train_loss": [r["train_loss"] for r in rs],
        "test_acc": accs,
        "test_acc_mean": statistics.fmean(accs),
        "test_acc_sd": statistics.stdev(accs) if len(accs) > 1 else None,
    }


def _check_same_setup(results: dict[str, dict]) -> list[str]:
    """Differences in what the tuned runners really used (there should be none)."""
    keys = ("optimizer", "adam_fused", "lr", "layout", "valid_batch_size", "train_input",
            "valid_batches")  # fmt: skip
    tuned = {n: r["observed"] for n, r in results.items() if r["config"] == "tuned"}
    problems = []
    for key in keys:
        values = {n: o.get(key) for n, o in tuned.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            problems.append(f"{key} differs: {values}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs per method (default 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--data-home", default=None, help="an OpenML cache to read (not the shared one)")
    p.add_argument("--subset", type=int, default=None, help="use N training rows (smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="torch seed / random_state (default 0)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    p.add_argument(
        "--methods", default=DEFAULT_METHODS,
        help=f"comma list, run in this order, from: {', '.join(VARIANTS)}",
    )  # fmt: skip
    p.add_argument(
        "--repeats", type=int, default=1,
        help="run every method R times (seeds seed..seed+R-1, order rotated); default 1",
    )  # fmt: skip
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up steps")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = sorted(set(methods) - set(VARIANTS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    import sklearn

    try:
        import skorch

        skorch_version = skorch.__version__
    except ImportError:
        skorch_version = "not installed"
        dropped = [m for m in methods if VARIANTS[m][0] == "skorch"]
        methods = [m for m in methods if m not in dropped]
        if dropped:
            print(f"note: skorch is not installed (pip install '.[bench]'); leaving out {dropped}")
    fused_ok, why_not = fused_adam_available(device)
    configs = kernel_configs(device, fused_ok)
    bad = [m for m in methods if VARIANTS[m][0] == "tandem"
           and configs[VARIANTS[m][1]].channels_last != (device.type == "cpu")]  # fmt: skip
    if bad:
        p.error(f"{bad}: tandem always places conv nets channels-last on the CPU; use "
                "tandem-unfused for tandem with non-fused Adam")  # fmt: skip
    if not methods:
        p.error("no methods left to run")

    t0 = time.perf_counter()
    X, y, where = load_usps(args.data_home)
    load_s = time.perf_counter() - t0
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    if args.subset and args.subset < len(ytr):
        Xtr, _, ytr, _ = train_test_split(
            Xtr, ytr, train_size=args.subset, stratify=ytr, random_state=SPLIT_SEED
        )
    Xtr, Xte = as_input(Xtr), as_input(Xte)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"torch {torch.__version__} | scikit-learn {sklearn.__version__} | skorch {skorch_version}"
    )
    print(
        f"device: {device} ({dev_name or platform.machine()}) | torch threads: "
        f"{torch.get_num_threads()} | cpu count: {os.cpu_count()}"
    )
    print(
        f"USPS (OpenML {USPS_ID}) from {where} in {load_s:.1f} s: {X.shape[0]} rows x "
        f"{X.shape[1]} features, {X.dtype}, range [{X.min():g}, {X.max():g}], "
        f"{len(np.unique(y))} classes"
    )
    print(
        f"split: stratified, test_size={TEST_SIZE}, random_state={SPLIT_SEED} -> "
        f"train {len(ytr)} (of which {VALID_FRACTION:.0%} validation), test {len(yte)}"
    )
    print(
        f"settings: {MODULE}, Adam lr={LR}, batch {BATCH}, validation batch {EVAL_BATCH}, input "
        f"float32 C-contiguous (N, 256), no early stopping, {args.epochs} epochs, seed {args.seed}"
    )
    if not fused_ok:
        print(f"note: fused Adam is NOT available on {device} ({why_not}); the tuned kernels "
              "fall back to Adam's default implementation for every runner")  # fmt: skip
    print("kernels: " + "; ".join(f"{k} = {v.describe()}" for k, v in configs.items()) + "\n",
          flush=True)  # fmt: skip

    if not args.no_warmup:
        for config in dict.fromkeys(VARIANTS[m][1] for m in methods):
            warm_up(device, Xtr, configs[config])

    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]  # rotate
        seed = args.seed + rep
        for name in order:
            tag = f" (repeat {rep + 1}/{args.repeats}, seed {seed})" if args.repeats > 1 else ""
            print(f"running {name} [{configs[VARIANTS[name][1]].describe()}]{tag} ...", flush=True)
            cpu_before = _cpu_seconds()
            r = run_method(name, Xtr, ytr, Xte, yte, configs=configs, epochs=args.epochs,
                           device=device, seed=seed)  # fmt: skip
            r["other_cpu_s"] = _foreign_cpu(cpu_before, _cpu_seconds())
            runs[name].append(r)
            other = (
                ""
                if r["other_cpu_s"] is None
                else f" | other processes {r['other_cpu_s']:.1f} CPU s"
            )
            print(
                f"  epochs (s): {', '.join(f'{s:.2f}' for s in r['epoch_seconds'])} | fit "
                f"{r['fit_seconds']:.1f} s | test acc {r['test_acc']:.4f}{other}",
                flush=True,
            )

    results = {name: _summarise(rs) for name, rs in runs.items()}
    s = {name: r["s_per_epoch"] for name, r in results.items()}
    plain, sk = s.get("plain"), s.get("skorch")
    for r in results.values():
        tuned = s.get(r["runner"])
        r["vs_plain"] = r["s_per_epoch"] / plain if plain else None
        r["vs_own_tuned"] = r["s_per_epoch"] / tuned if tuned else None

    excl = "epochs 2..N (first left out)" if args.epochs >= 3 else "all epochs (fewer than 3)"
    reps = f", pooled over {args.repeats} repeats" if args.repeats > 1 else ""
    tuned_k = configs["tuned"]

    # (a) loop overhead: the three runners with identical kernels, input and validation batch
    fair = [n for n in ("plain", "tandem", "skorch") if n in results]
    if fair:
        rows = []
        for name in fair:
            r = results[name]
            valid = [v for v in r["valid_acc"] if v is not None]
            rows.append([
                name,
                f"{r['s_per_epoch']:.3f}",
                f"{r['best_epoch_s']:.3f}",
                f"{statistics.median(r['fit_seconds']):.1f}",
                "-" if None in r["other_cpu_s"] else f"{sum(r['other_cpu_s']):.1f}",
                f"{statistics.fmean(valid):.4f}" if valid else "-",
                _acc(r),
                _ratio(r["s_per_epoch"], plain),
                _ratio(sk, r["s_per_epoch"], ".2f"),
            ])  # fmt: skip
        print()
        print_table(
            ["method", "s/epoch", "fastest epoch (s)", "fit (s)", "other CPU (s)", "valid acc",
             "test acc", "vs plain", "skorch / this"],
            rows,
            f"(a) loop overhead -- same kernels ({tuned_k.describe()}), same input, validation "
            f"batch {EVAL_BATCH}\nUSPS {MODULE}, {args.epochs} epochs on {device}: s/epoch = "
            f"median over {excl}{reps}",
        )  # fmt: skip
        print(
            "vs plain = s/epoch / the plain loop's (= loop overhead, lower is better); skorch / "
            "this = skorch's s/epoch / this method's;\nfit (s) = wall time of the whole fit call "
            "(median over repeats); other CPU (s) = CPU time other processes took during this "
            "method's fits;\nvalid acc = last epoch's; test acc = mean (± sd over repeats)"
        )
        problems = _check_same_setup({n: results[n] for n in fair})
        print("setup read back from the runs: " + ("IDENTICAL" if not problems else "DIFFERENT"))
        for line in problems:
            print(f"  {line}")

    # (b) kernel choice: each runner with other kernels vs the same runner tuned
    # grouped by runner, tuned first; a tuned row only where that runner has another row
    variants = [
        n
        for runner in RUNNERS
        for n, (rn, _) in VARIANTS.items()
        if rn == runner
        and n in results
        and sum(r["runner"] == runner for r in results.values()) > 1
    ]
    if variants:
        rows = []
        for name in variants:
            r = results[name]
            k = Kernels(**r["kernels"])
            rows.append([
                name,
                "fused" if k.fused else "default",
                "channels-last" if k.channels_last else "NCHW",
                f"{r['s_per_epoch']:.3f}",
                _acc(r),
                "-" if r["vs_own_tuned"] is None else f"{r['vs_own_tuned']:.3f}x",
                "-" if r["vs_plain"] is None else f"{r['vs_plain']:.3f}x",
            ])  # fmt: skip
        print()
        print_table(
            ["method", "Adam", "layout", "s/epoch", "test acc", "vs same runner tuned",
             "vs plain (tuned)"],
            rows,
            "(b) kernel choice -- same loop, other kernels (s/epoch as in (a))",
        )  # fmt: skip
        print(
            "vs same runner tuned = s/epoch / the same runner's with the tuned kernels: what "
            "choosing the kernels is worth in that loop (1.25x = 25 % slower without them)"
        )

    verdict: dict = {"same_setup": not problems if fair else None}
    verdict["loop_overhead_vs_plain"] = {n: results[n]["vs_plain"] for n in fair if plain}
    verdict["kernel_slowdown_vs_tuned"] = {
        n: results[n]["vs_own_tuned"] for n in variants if results[n]["config"] != "tuned"
    }
    print()
    foreign = [o for r in results.values() for o in r["other_cpu_s"] if o is not None]
    fit_total = sum(f for r in results.values() for f in r["fit_seconds"])
    if foreign and device.type == "cpu":
        share = sum(foreign) / max(fit_total, 1e-9)
        print(
            f"other processes used {sum(foreign):.1f} CPU s during {fit_total:.1f} s of fits "
            f"({share:.0%})"
            + (" -- NOT a clean measurement: run again on a quiet machine" if share > 0.05 else "")
        )
    if "tandem" in results:
        t = results["tandem"]
        n_test = len(yte)
        if plain:
            ratio = t["s_per_epoch"] / plain
            verdict["tandem_vs_plain"] = ratio
            ok = ratio <= TARGET_VS_PLAIN
            print(
                f"target tandem <= {TARGET_VS_PLAIN:.2f}x plain (same kernels): {ratio:.3f}x -> "
                f"{'MET' if ok else 'MISSED'}"
            )
        if sk:
            speed = sk / t["s_per_epoch"]
            verdict["skorch_over_tandem"] = speed
            ok = speed >= TARGET_VS_SKORCH
            print(
                f"target skorch/tandem >= {TARGET_VS_SKORCH:.1f}x (same kernels): {speed:.2f}x -> "
                f"{'MET' if ok else 'MISSED'}"
            )
        if "skorch-default" in results:
            sd = results["skorch-default"]["s_per_epoch"]
            out_of_box = sd / t["s_per_epoch"]
            verdict["skorch_default_over_tandem"] = out_of_box
            parts = f" = loop {sk / t['s_per_epoch']:.2f}x * kernels {sd / sk:.2f}x" if sk else ""
            print(f"out of the box (each with its own defaults): skorch-default / tandem = "
                  f"{out_of_box:.2f}x{parts}")  # fmt: skip
        for other in ("plain", "skorch"):
            if other in results:
                a, b = t["test_acc_mean"], results[other]["test_acc_mean"]
                p_ = (a + b) / 2
                # 2 sigma of the difference of two accuracies measured on this many test rows
                # (test-set sampling only; seed-to-seed training noise comes on top: --repeats)
                noise = 2 * math.sqrt(2 * p_ * (1 - p_) / (n_test * args.repeats))
                verdict[f"acc_diff_vs_{other}"] = a - b
                print(
                    f"test accuracy tandem - {other}: {a - b:+.4f} (2-sigma test-sampling "
                    f"noise: {noise:.4f}) -> "
                    f"{'within noise' if abs(a - b) <= noise else 'outside test-sampling noise'}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps({
            "torch": torch.__version__, "skorch": skorch_version, "device": str(device),
            "device_name": dev_name, "threads": torch.get_num_threads(), "epochs": args.epochs,
            "subset": args.subset, "repeats": args.repeats, "n_train": len(ytr),
            "n_test": len(yte), "lr": LR, "batch_size": BATCH, "eval_batch": EVAL_BATCH,
            "fused_adam_available": fused_ok, "fused_unavailable_reason": why_not,
            "kernel_configs": {k: asdict(v) for k, v in configs.items()},
            "results": results, "verdict": verdict,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
