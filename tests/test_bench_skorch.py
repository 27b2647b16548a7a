"""benchmarks/estimator_vs_skorch.py compares like with like, run for run.

In the loop-overhead comparison, plain, tandem and skorch must train with the same optimizer
kernels (Adam, same ``fused`` flag and lr), the same weight memory format, the same input and the
same validation batch size. These tests check what the runners are built with and what they
really use, read back from tiny 1-epoch runs on random data (no USPS, no download, seconds).
skorch is optional (the ``bench`` extra): its checks skip when it is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import estimator_vs_skorch as bench  # noqa: E402

from tandem import training  # noqa: E402

CPU = torch.device("cpu")
SETUP_KEYS = ("optimizer", "adam_fused", "lr", "layout", "valid_batch_size", "train_input",
              "valid_batches")  # fmt: skip


@pytest.fixture(scope="module")
def configs():
    return bench.kernel_configs(CPU)


@pytest.fixture(scope="module")
def data():
    """120 random 16x16 'images', 12 per class, labels as strings like USPS's."""
    rng = np.random.default_rng(0)
    y = np.repeat([str(c) for c in range(1, 11)], 12)
    X = rng.uniform(-1, 1, size=(len(y), 256)).astype(np.float32)
    return X[:100], y[:100], X[100:], y[100:]


def _run(name, data, configs):
    Xtr, ytr, Xte, yte = data
    return bench.run_method(name, Xtr, ytr, Xte, yte, configs=configs, epochs=1, device=CPU,
                            seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def plain_run(data, configs):
    return _run("plain", data, configs)


def _setup(run: dict) -> dict:
    return {k: run["observed"][k] for k in SETUP_KEYS}


def test_tuned_kernels_are_fused_adam_and_tandems_layout(configs):
    ok, why = bench.fused_adam_available(CPU)
    assert ok, f"fused Adam should work on the CPU with torch {torch.__version__}: {why}"
    assert configs["tuned"] == bench.Kernels(fused=True, channels_last=True)
    assert configs["default"] == bench.Kernels(fused=False, channels_last=False)
    assert bench.kernel_configs(CPU, fused_ok=False)["tuned"].fused is False  # clear fallback


def test_plain_and_tandem_are_built_alike(configs):
    tuned = configs["tuned"]
    module, opt = bench.build_plain(tuned, device=CPU, seed=0)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["fused"] is True and opt.defaults["lr"] == bench.LR
    assert bench.module_layout(module) == "channels_last"
    est = bench.build_tandem(tuned, epochs=1, device=CPU, seed=0)
    params = est.get_params()
    assert params["optimizer"] == "adam" and params["optimizer__fused"] is True
    assert params["lr"] == bench.LR and params["batch_size"] == bench.BATCH
    # tandem validates in batches of training.EVAL_BATCH_SIZE; the others are set to the same
    assert bench.EVAL_BATCH == training.EVAL_BATCH_SIZE


def test_plain_and_tandem_really_use_the_same_setup(plain_run, data, configs):
    tandem_run = _run("tandem", data, configs)
    assert _setup(plain_run) == _setup(tandem_run)
    obs = plain_run["observed"]
    assert obs["adam_fused"] is True and obs["lr"] == bench.LR
    assert obs["layout"] == "channels_last"
    assert obs["valid_batch_size"] == bench.EVAL_BATCH
    assert obs["train_input"] == "float32 (*, 256) contiguous on cpu"
    assert obs["valid_batches"] == [20]  # 20 % of 100 rows, in one batch


def test_kernel_variants_differ_only_in_kernels(plain_run, data, configs):
    default = _run("plain-default", data, configs)["observed"]
    assert default["adam_fused"] is False and default["layout"] == "contiguous"
    same = {k: v for k, v in default.items() if k not in ("adam_fused", "layout")}
    assert same == {k: v for k, v in plain_run["observed"].items() if k in same}
    assert _run("tandem-unfused", data, configs)["observed"]["adam_fused"] is False
    with pytest.raises(ValueError, match="channels-last"):
        bench.build_tandem(configs["default"], epochs=1, device=CPU, seed=0)


def test_skorch_is_built_like_the_others(configs):
    pytest.importorskip("skorch")
    net = bench.build_skorch(configs["tuned"], epochs=1, device=CPU, seed=0).initialize()
    assert isinstance(net.optimizer_, torch.optim.Adam)
    assert net.optimizer_.defaults["fused"] is True
    assert net.optimizer_.param_groups[0]["lr"] == bench.LR and net.batch_size == bench.BATCH
    assert bench.skorch_valid_batch_size(net) == bench.EVAL_BATCH
    assert bench.module_layout(net.module_) == "channels_last"


def test_skorch_really_uses_the_same_setup(plain_run, data, configs):
    pytest.importorskip("skorch")
    assert _setup(_run("skorch", data, configs)) == _setup(plain_run)
    default = _run("skorch-default", data, configs)["observed"]
    assert default["adam_fused"] is False and default["layout"] == "contiguous"
