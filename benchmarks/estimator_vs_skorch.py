#!/usr/bin/env python
"""tandem's TorchClassifier vs skorch's NeuralNetClassifier vs a plain torch loop, on USPS.

Issue #2, "What it must show", point 3. All three train the ``usps_cnn`` network (built by
``tandem.models.build_module`` from the same seed, so all three start from the same weights) with
the same settings: Adam, lr 1e-3, batch 32, a 20 % stratified validation slice of the training
split evaluated after every epoch, no early stopping, ``--epochs`` epochs.

- tandem: ``TorchClassifier(module="usps_cnn", ...)``; s/epoch from ``est.history_[i]["seconds"]``.
- skorch: ``NeuralNetClassifier`` with ``ValidSplit(0.2, stratified=True)`` and shuffled training
  batches (skorch's default is not to shuffle; the others do); s/epoch from
  ``net.history[:, "dur"]``. Labels are encoded to int64 for skorch, as its docs require, and its
  predictions decoded back.
- plain: tensors preloaded on the device, ``randperm`` shuffle, slices of 32 rows, Adam + CE, a
  validation pass in one batch under ``inference_mode`` and one host sync per epoch; s/epoch from
  ``perf_counter`` around each epoch (training and validation, as for the other two).

Data: USPS (OpenML data id 41070) from the offline OpenML cache. By default the shared cache
(``../shared/data/openml-cache``) is copied to a temporary folder first, since scikit-learn deletes
cache files it fails to parse; ``--data-home`` or ``SCIKIT_LEARN_DATA`` name a cache to use instead.
The split is stratified, test_size 0.3, random_state 11; features stay float32 in [-1, 1].

    python benchmarks/estimator_vs_skorch.py --epochs 3
    python benchmarks/estimator_vs_skorch.py --epochs 1 --subset 600      # quick smoke run
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
from pathlib import Path

import numpy as np
import torch
from _usps import USPS_ID, load_usps
from sklearn.model_selection import StratifiedShuffleSplit, train_test_split
from sklearn.preprocessing import LabelEncoder
from torch import nn

from tandem import TorchClassifier
from tandem.models import build_module

MODULE = "usps_cnn"
LR = 1e-3
BATCH = 32
VALID_FRACTION = 0.2
TEST_SIZE = 0.3
SPLIT_SEED = 11
EVAL_BATCH = 4096

# The targets.
TARGET_VS_PLAIN = 1.10  # tandem s/epoch <= 1.10 x plain loop
TARGET_VS_SKORCH = 1.2  # skorch s/epoch >= 1.2 x tandem


# --------------------------------------------------------------------------- data
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


def warm_up(device: torch.device, X: np.ndarray, steps: int = 20) -> None:
    """A few untimed training steps so that no method pays the one-off kernel/allocator setup."""
    module = fresh_module(12345).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    xb = torch.as_tensor(X[:BATCH], device=device)
    yb = torch.zeros(BATCH, dtype=torch.long, device=device)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(module(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.inference_mode():
        module.eval()
        module(torch.as_tensor(X[:2048], device=device))
    sync(device)


# --------------------------------------------------------------------------- the three methods
def run_tandem(Xtr, ytr, Xte, yte, *, epochs, device, seed) -> dict:
    est = TorchClassifier(
        module=MODULE,
        optimizer="adam",
        lr=LR,
        batch_size=BATCH,
        max_epochs=epochs,
        validation_fraction=VALID_FRACTION,
        patience=None,
        device=str(device),
        random_state=seed,
    )
    sync(device)
    start = time.perf_counter()
    est.fit(Xtr, ytr)
    sync(device)
    fit_wall = time.perf_counter() - start
    test_acc = float(np.mean(est.predict(Xte) == yte))
    last = est.history_[-1]
    return {
        "method": "tandem",
        "epoch_seconds": [float(h["seconds"]) for h in est.history_],
        "fit_seconds": fit_wall,
        "valid_acc": last.get("valid_accuracy"),
        "train_loss": last["train_loss"],
        "test_acc": test_acc,
    }


def run_skorch(Xtr, ytr, Xte, yte, *, epochs, device, seed) -> dict:
    from skorch import NeuralNetClassifier
    from skorch.dataset import ValidSplit

    enc = LabelEncoder().fit(ytr)
    ytr_int = enc.transform(ytr).astype(np.int64)
    module = fresh_module(seed)
    net = NeuralNetClassifier(
        module=module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=LR,
        batch_size=BATCH,
        max_epochs=epochs,
        train_split=ValidSplit(VALID_FRACTION, stratified=True, random_state=seed),
        iterator_train__shuffle=True,
        device=str(device),
        verbose=0,
    )
    torch.manual_seed(seed)  # skorch's DataLoader shuffles with the global generator
    sync(device)
    start = time.perf_counter()
    net.fit(Xtr, ytr_int)
    sync(device)
    fit_wall = time.perf_counter() - start
    pred = enc.inverse_transform(net.predict(Xte))
    return {
        "method": "skorch",
        "epoch_seconds": [float(d) for d in net.history[:, "dur"]],
        "fit_seconds": fit_wall,
        "valid_acc": float(net.history[-1, "valid_acc"]),
        "train_loss": float(net.history[-1, "train_loss"]),
        "test_acc": float(np.mean(pred == yte)),
    }


def run_plain(Xtr, ytr, Xte, yte, *, epochs, device, seed) -> dict:
    enc = LabelEncoder().fit(ytr)
    y_all = enc.transform(ytr).astype(np.int64)
    split = StratifiedShuffleSplit(n_splits=1, test_size=VALID_FRACTION, random_state=seed)
    tr_idx, va_idx = next(split.split(np.zeros((len(y_all), 1)), y_all))

    module = fresh_module(seed).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
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
            out = module(Xv)  # one large batch
            v_loss = criterion(out, yv)
            v_acc = (out.argmax(dim=1) == yv).float().mean()
        stats = torch.stack([loss_sum / n, v_loss, v_acc]).tolist()  # the epoch's one host sync
        epoch_seconds.append(time.perf_counter() - start)
    fit_wall = time.perf_counter() - fit_start

    module.eval()
    Xt = torch.as_tensor(Xte, device=device)
    with torch.inference_mode():
        pred_idx = torch.cat(
            [module(Xt[i : i + EVAL_BATCH]).argmax(dim=1) for i in range(0, len(Xt), EVAL_BATCH)]
        )
    pred = enc.inverse_transform(pred_idx.cpu().numpy())
    return {
        "method": "plain",
        "epoch_seconds": epoch_seconds,
        "fit_seconds": fit_wall,
        "valid_acc": stats[2],
        "train_loss": stats[0],
        "test_acc": float(np.mean(pred == yte)),
    }


RUNNERS = {"plain": run_plain, "tandem": run_tandem, "skorch": run_skorch}


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
    p.add_argument("--methods", default="plain,tandem,skorch", help="comma list, run in this order")
    p.add_argument(
        "--repeats", type=int, default=1,
        help="run every method R times (seeds seed..seed+R-1, order rotated); default 1",
    )  # fmt: skip
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up steps")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(RUNNERS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(RUNNERS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

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

    import sklearn

    try:
        import skorch

        skorch_version = skorch.__version__
    except ImportError:
        skorch_version = "not installed"
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
        f"settings: {MODULE}, Adam lr={LR}, batch {BATCH}, no early stopping, "
        f"{args.epochs} epochs, seed {args.seed}\n",
        flush=True,
    )

    if not args.no_warmup:
        warm_up(device, Xtr)

    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]  # rotate
        seed = args.seed + rep
        for name in order:
            tag = f" (repeat {rep + 1}/{args.repeats}, seed {seed})" if args.repeats > 1 else ""
            print(f"running {name}{tag} ...", flush=True)
            cpu_before = _cpu_seconds()
            r = RUNNERS[name](Xtr, ytr, Xte, yte, epochs=args.epochs, device=device, seed=seed)
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

    results: dict[str, dict] = {}
    for name, rs in runs.items():
        eligible = [s for r in rs for s in timed_epochs(r["epoch_seconds"])]
        accs = [r["test_acc"] for r in rs]
        results[name] = {
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

    plain = results.get("plain", {}).get("s_per_epoch")
    sk = results.get("skorch", {}).get("s_per_epoch")
    header = ["method", "s/epoch", "fastest epoch (s)", "fit (s)", "other CPU (s)", "valid acc",
              "test acc", "vs plain", "skorch / this"]  # fmt: skip
    rows = []
    for name, r in results.items():
        s = r["s_per_epoch"]
        acc = f"{r['test_acc_mean']:.4f}"
        if r["test_acc_sd"] is not None:
            acc += f" ± {r['test_acc_sd']:.4f}"
        valid = [v for v in r["valid_acc"] if v is not None]
        rows.append([
            name,
            f"{s:.3f}",
            f"{r['best_epoch_s']:.3f}",
            f"{statistics.median(r['fit_seconds']):.1f}",
            "-" if None in r["other_cpu_s"] else f"{sum(r['other_cpu_s']):.1f}",
            f"{statistics.fmean(valid):.4f}" if valid else "-",
            acc,
            f"{s / plain:.3f}x" if plain else "-",
            f"{sk / s:.2f}x" if sk else "-",
        ])  # fmt: skip
    excl = "epochs 2..N (first epoch left out)" if args.epochs >= 3 else "all epochs (fewer than 3)"
    reps = f", pooled over {args.repeats} repeats" if args.repeats > 1 else ""
    print()
    print_table(
        header,
        rows,
        f"USPS {MODULE}, {args.epochs} epochs on {device}: s/epoch = median over {excl}{reps}",
    )
    print(
        "vs plain = s/epoch / the plain loop's s/epoch (lower is better); skorch / this = "
        "skorch's s/epoch / this method's (the speed-up over skorch);\n"
        "fit (s) = wall time of the whole fit call (median over repeats); other CPU (s) = CPU "
        "time other processes took during this method's fits;\nvalid acc = last epoch's; "
        "test acc = mean (± sd over repeats)"
    )
    foreign = [o for r in results.values() for o in r["other_cpu_s"] if o is not None]
    fit_total = sum(f for r in results.values() for f in r["fit_seconds"])
    if foreign and device.type == "cpu":
        share = sum(foreign) / max(fit_total, 1e-9)
        print(
            f"other processes used {sum(foreign):.1f} CPU s during {fit_total:.1f} s of fits "
            f"({share:.0%})"
            + (" -- NOT a clean measurement: run again on a quiet machine" if share > 0.05 else "")
        )
    verdict = {}
    if "tandem" in results:
        t = results["tandem"]
        n_test = len(yte)
        if plain:
            ratio = t["s_per_epoch"] / plain
            verdict["tandem_vs_plain"] = ratio
            ok = ratio <= TARGET_VS_PLAIN
            print(
                f"target tandem <= {TARGET_VS_PLAIN:.2f}x plain: {ratio:.3f}x -> "
                f"{'MET' if ok else 'MISSED'}"
            )
        if sk:
            speed = sk / t["s_per_epoch"]
            verdict["skorch_over_tandem"] = speed
            ok = speed >= TARGET_VS_SKORCH
            print(
                f"target skorch/tandem >= {TARGET_VS_SKORCH:.1f}x: {speed:.2f}x -> "
                f"{'MET' if ok else 'MISSED'}"
            )
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
            "torch": torch.__version__, "device": str(device), "device_name": dev_name,
            "threads": torch.get_num_threads(), "epochs": args.epochs, "subset": args.subset,
            "repeats": args.repeats,
            "n_train": len(ytr), "n_test": len(yte), "results": results, "verdict": verdict,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
