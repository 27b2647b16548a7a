"""Data-parallel training under torchrun, simulated on the CPU with gloo (two processes).

The estimator joins the process group torchrun describes; each rank trains on its share of every
global batch and DDP averages the gradients, so two ranks reproduce one process's fit. CUDA (nccl,
one GPU per rank) runs the same code; its assertions are skipped here without a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tool_env, usps_like

sys.path.insert(0, str(Path(__file__).parent))
import _ddp_script as script  # noqa: E402

SCRIPT = Path(__file__).parent / "_ddp_script.py"
TOL = 1e-5


def torchrun(out: Path, options: dict, nproc: int = 2, timeout: float = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", str(SCRIPT), str(out), json.dumps(options)]  # fmt: skip
    return subprocess.run(cmd, env=tool_env(TANDEM_DDP_TIMEOUT="30"), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def single(options: dict) -> dict:
    X, y, weights = script.data(options)
    return script.result(script.estimator(options).fit(X, y, sample_weight=weights), X)


def assert_same_fit(ddp: dict, one: dict) -> None:
    assert len(ddp["history"]) == len(one["history"]) and ddp["best_epoch"] == one["best_epoch"]
    for a, b in zip(ddp["history"], one["history"], strict=True):
        assert a.keys() == b.keys() and a["epoch"] == b["epoch"]
        for key in ("train_loss", "valid_loss", "valid_accuracy", "lr"):
            assert abs(a[key] - b[key]) <= TOL, (a["epoch"], key, a[key], b[key])
    assert np.abs(np.array(ddp["proba"]) - np.array(one["proba"])).max() <= TOL


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    """Sample weights and a trailing batch of 5 rows (shares of 3 and 2): each rank's loss must
    be scaled by the whole batch's weight for the averaged gradient to be the global one."""
    options = {"batch_size": 47, "weighted": True}  # 240 training rows = 5 x 47 + 5
    out = tmp_path / "ddp.json"
    proc = torchrun(out, options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_fit(json.loads(out.read_text()), single(options))
    assert (tmp_path / "ddp.model" / "weights.safetensors").is_file()  # written once, by rank 0


def test_an_overridden_get_loss_gives_two_ranks_the_one_process_fit(tmp_path):
    """A subclass's focal loss (``get_loss``) under DDP: each rank's share is weighed and scaled
    as the built-in loss is, so two ranks still equal one process (MLP, no dropout)."""
    options = {"batch_size": 47, "weighted": True, "focal": True}
    out = tmp_path / "ddp.json"
    proc = torchrun(out, options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    focal = json.loads(out.read_text())
    assert_same_fit(focal, single(options))
    plain = single({**options, "focal": False})
    assert abs(focal["history"][0]["train_loss"] - plain["history"][0]["train_loss"]) > 0.1


@pytest.mark.slow
def test_early_stopping_and_a_checkpoint_resumed_after_a_kill(tmp_path):
    options = {"max_epochs": 30, "patience": 2, "checkpoint": str(tmp_path / "ckpt.pt")}
    out = tmp_path / "ddp.json"
    killed = torchrun(out, {**options, "kill_after_epoch": 5})
    assert killed.returncode != 0 and not out.exists()
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # epoch 4's, whole
    assert len(state["loop"]["history"]) == 4 and not state["complete"]
    resumed = torchrun(out, options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ddp = json.loads(out.read_text())
    reference = single({"max_epochs": 30, "patience": 2})
    assert len(reference["history"]) < 30  # early stopping did stop it
    assert_same_fit(ddp, reference)


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_with_an_error_and_nothing_half_written(tmp_path):
    out = tmp_path / "ddp.json"
    options = {"max_epochs": 200, "checkpoint": str(tmp_path / "ckpt.pt"), "die_after_steps": 20}
    start = time.monotonic()
    proc = torchrun(out, options, timeout=120)
    seconds = time.monotonic() - start
    assert proc.returncode != 0 and seconds < 90
    assert "exitcode" in proc.stderr and ": 3" in proc.stderr  # torchrun names the dead rank
    assert not out.exists() and not (tmp_path / "ddp.model").exists()
    if (tmp_path / "ckpt.pt").exists():  # the last checkpoint rank 0 wrote is whole
        torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.slow
def test_dropout_under_ddp_resumes_exactly(tmp_path):
    """With dropout each rank draws its own masks from a seed of (seed, epoch, rank): a run
    killed at epoch 3 and resumed ends with the weights of an uninterrupted DDP run."""
    options = {"max_epochs": 5, "dropout": 0.3, "checkpoint": str(tmp_path / "ckpt.pt")}
    whole, out = tmp_path / "whole.json", tmp_path / "ddp.json"
    assert torchrun(whole, {**options, "checkpoint": None}).returncode == 0
    assert torchrun(out, {**options, "kill_after_epoch": 3}).returncode != 0
    resumed = torchrun(out, options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = json.loads(out.read_text()), json.loads(whole.read_text())
    assert a["history"] == b["history"] and a["proba"] == b["proba"]


def test_steps_leave_every_rank_two_rows():
    from tandem.training import n_steps

    assert n_steps(70, 32) == 3 and n_steps(65, 32) == 2  # one process: a 1-row batch is dropped
    assert n_steps(67, 32, world=2) == 2 and n_steps(68, 32, world=2) == 3  # 3 rows < 2 x 2
    assert n_steps(10, 32, world=4) == 1  # smaller than one batch: the data is the batch


def test_outside_torchrun_nothing_changes(monkeypatch):
    from tandem import training

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert training.distributed_env() is None and training.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert training.init_distributed(torch.device("cpu")) is None


def test_ranks_and_devices_from_torchrun_variables(monkeypatch):
    from tandem import training

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training.distributed_env() == training.Distributed(3, 4, 1)
    assert not training.is_main_process()
    assert training.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: under torchrun 'auto' is cuda:$LOCAL_RANK")
    assert training.resolve_device("auto") == torch.device("cuda", 1)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA devices: nccl, one GPU per rank")  # fmt: skip
def test_two_gpus_with_nccl_equal_one(tmp_path):  # pragma: no cover - no GPU in CI
    out = tmp_path / "ddp.json"
    proc = torchrun(out, {"device": "cuda"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["history"]


@pytest.mark.slow
def test_train_stage_with_nproc_runs_under_torchrun_and_rank_0_writes(project):
    """`tandem train --set train.nproc=2`: the runner starts torchrun; the outputs are written
    once (one DVCLive row per epoch), and the fit equals the one-process stage's."""
    usps_like(200, at=(project / "data/usps/features_train.parquet",))

    def run(nproc: int, *sets: str) -> subprocess.CompletedProcess:
        sets = (
            "train.module=mlp",
            "train.module_kwargs={mlp: {hidden_sizes: [64]}}",  # no dropout: ranks equal one
            "train.max_epochs=3",
            "train.lr_schedule=null",
            "train.min_steps=0",
            "train.batch_size=64",
            f"train.nproc={nproc}",
            "datasets.usps.train={}",  # the shared section alone, not USPS's own recipe
            *sets,
        )
        args = ["tandem", "train", "--dataset", "usps", *[w for s in sets for w in ("--set", s)]]
        return subprocess.run(args, cwd=project, env=tool_env(), capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    def train(nproc: int) -> list[dict]:
        proc = run(nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = (
            (project / "dvclive/usps/plots/metrics/train_loss.tsv").read_text().strip().splitlines()
        )
        assert len(rows) == 4  # header + one row per epoch: only rank 0 logs
        return json.loads((project / "models/usps/model/config.json").read_text())["history"]

    ddp, one = train(2), train(1)
    for a, b in zip(ddp, one, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= TOL
        assert abs(a["valid_loss"] - b["valid_loss"]) <= TOL
    assert json.loads((project / "metrics/usps/train.json").read_text())["epochs"] == 3
    # a failing rank: the ranks' one-line error, once, and no traceback (torchrun's included)
    bad = run(2, "train.optimizer=sgd", "train.lr=1e10")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "data-parallel training with 2 processes failed" in bad.stderr
    assert bad.stderr.count("training diverged at epoch") == 1


@pytest.mark.slow
def test_a_rank_that_crashes_outside_tandem_is_explained(tmp_path, monkeypatch):
    """A rank killed by a C++ abort (gloo throwing in a background thread) prints no tandem error:
    the launcher's message carries the rank's last words, not only torchrun's summary."""
    from tandem import training

    (tmp_path / "crashing_rank.py").write_text(
        "import os, sys\n"
        "print(\"terminate called after throwing an instance of 'gloo::IoException'\", "
        "file=sys.stderr)\n"
        "print('  what():  [gloo] Connection closed by peer', file=sys.stderr)\n"
        "sys.stderr.flush()\n"
        "os.abort()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(ChildProcessError) as info:
        training.launch(2, ["crashing_rank"])
    message = str(info.value)
    assert "data-parallel training with 2 processes failed" in message
    assert "what():  [gloo] Connection closed by peer" in message
    assert message.count("Connection closed by peer") == 1  # once, not once per rank


def digits_as_usps(project: Path) -> pd.DataFrame:
    """sklearn's 8x8 digits as USPS's stages read them: 16x16 pixels in [-1, 1] (each pixel
    doubled), columns int0..int255, labels "1".."10" for the digits 0..9. The first 1000 rows
    are the train stage's features; the rest (797) are returned, held out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.repeat(2, axis=1).repeat(2, axis=2) / 8.0 - 1.0
    frame = pd.DataFrame(images.reshape(len(images), -1).astype("float32"),
                         columns=[f"int{i}" for i in range(256)])  # fmt: skip
    frame["class"] = (digits.target + 1).astype(str)
    (project / "data/usps").mkdir(parents=True, exist_ok=True)
    frame.iloc[:1000].to_parquet(project / "data/usps/features_train.parquet", index=False)
    return frame.iloc[1000:]


@pytest.mark.slow
def test_usps_recipe_under_two_ranks_trains_as_well_as_one_process(project):
    """USPS's own recipe (the BatchNorm CNN of three blocks, affine and elastic augmentation,
    EMA, batch 128, TTA) under `train.nproc=2` on the CPU: each rank normalises with its own
    half-batch and draws its own augmentation (training.sync_batchnorm), so the run is another
    random run of the recipe, not the same run. It completes, rank 0 alone writes, and the model
    is within one point of accuracy of the one-process model, on 797 held-out digits."""
    from tandem import TorchClassifier

    held_out = digits_as_usps(project)
    X, y = held_out.drop(columns="class"), held_out["class"].to_numpy()

    def train(nproc: int) -> tuple[float, float]:
        args = ["tandem", "train", "--dataset", "usps", "--set", f"train.nproc={nproc}"]
        proc = subprocess.run(args, cwd=project, env=tool_env(), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = json.loads((project / "metrics/usps/train.json").read_text())
        rows = (project / "dvclive/usps/plots/metrics/train_loss.tsv").read_text().splitlines()
        assert len(rows) == 1 + record["epochs"]  # header + one row per epoch: rank 0 alone
        assert not [p for p in project.rglob(".*.tmp")]  # no rank left a temporary folder
        model = TorchClassifier.load(project / "models/usps/model", device="cpu")
        assert model.ema == 0.999 and model.augment == "affine"  # the recipe, not a stand-in
        tta = model.classes_[model.predict_proba_tta(X).argmax(axis=1)]
        return (model.predict(X) == y).mean(), (tta == y).mean()

    two, one = train(2), train(1)
    assert one[0] > 0.9  # the recipe learns the digits
    for a, b in zip(two, one, strict=True):  # the plain network, and with TTA as evaluated
        assert abs(a - b) <= 0.01, (two, one)


def test_batchnorm_is_synchronised_on_cuda_and_kept_per_rank_on_the_cpu():
    """On CUDA every BatchNorm becomes a SyncBatchNorm over the same parameters and buffers (the
    optimizer built before keeps training them); on the CPU torch has no SyncBatchNorm, and the
    module is left as it is."""
    from tandem import training
    from tandem.models import build_module

    module = build_module("cnn", 256, 10, image_shape=[16, 16])
    params = {name: p for name, p in module.named_parameters()}
    assert training.sync_batchnorm(module, torch.device("cpu")) is module
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
    training.sync_batchnorm(module, torch.device("cuda"))  # the conversion needs no GPU
    kinds = [type(m) for m in module.modules()]
    plain = {torch.nn.BatchNorm1d, torch.nn.BatchNorm2d}
    assert torch.nn.SyncBatchNorm in kinds and not plain & set(kinds)
    assert all(p is params[name] for name, p in module.named_parameters())
