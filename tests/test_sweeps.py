"""DVC-native sweeps, as docs/search.md documents them: queue a parameter sweep with
`dvc exp run --queue -S 'train.lr=a,b'`, run the queue with `dvc queue start -j 2`, then find both
experiments with their metrics in `dvc exp show --json`, sort them, and `dvc exp apply` the best.

Runs in a temporary git repo (a copy of the project) on a copy of the offline OpenML cache."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, offline_env

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]
SMALL_TRAIN = {"module": "mlp", "module_kwargs": {"mlp": {"hidden_sizes": [32]}}, "max_epochs": 2,
               "min_steps": 0, "lr_schedule": None, "patience": None}  # fmt: skip
USPS_CHAIN = ("fetch", "split", "preprocess", "train", "evaluate")


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def sweep_repo(tmp_path) -> tuple[Path, dict]:
    """The project's USPS chain (fetch ... evaluate) in a fresh git repo, run and committed."""
    env = offline_env(tmp_path / "openml-cache", OMP_NUM_THREADS="1")
    repo = copy_project(tmp_path / "repo", clean=True)
    # the USPS chain only: every stage of the trimmed pipeline has run, so `dvc exp apply` can
    # check out all outputs (the tabular branch, cv and tune would add minutes and nothing here)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in USPS_CHAIN}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(SMALL_TRAIN)
    params["datasets"] = {"usps": params["datasets"]["usps"]}  # the registry: USPS alone
    params["datasets"]["usps"]["train"] = {}  # the shared (SMALL) section, which the sweep varies
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo, env)
    run(["git", "config", "user.name", "tandem-test"], repo, env)  # CI may have no identity
    run(["git", "config", "user.email", "test@tandem.invalid"], repo, env)
    run([*GIT, "add", "-A"], repo, env)
    run([*GIT, "commit", "-qm", "init"], repo, env)  # DVCLive needs a commit to exist
    run(["dvc", "repro"], repo, env)
    run([*GIT, "add", "-A"], repo, env)
    run([*GIT, "commit", "-qm", "baseline"], repo, env)
    return repo, env


def wait_for_queue(repo: Path, env: dict, timeout: float = 600) -> str:
    """Poll `dvc queue status` until nothing is queued or running and the workers are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        busy = any(word in status for word in ("Queued", "Running"))
        if not busy and "0 active" in status:
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def experiments(shown: list[dict]) -> dict[str, dict]:
    """name -> {"lr": ..., "accuracy": ...} for every experiment in `dvc exp show --json`."""
    out = {}
    for entry in shown:
        for exp in entry.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("metrics/usps/eval.json", {}).get("data", {})
                out[rev.get("name") or exp.get("name") or rev["rev"]] = {
                    "lr": params.get("train", {}).get("lr"),
                    "accuracy": metrics.get("accuracy"),
                }
    return out


def test_queue_two_experiments_run_them_and_show_both(sweep_repo):
    repo, env = sweep_repo
    # one -S with two values queues two experiments (a sweep)
    queued = run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.002,0.004"], repo, env)
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    run(["dvc", "queue", "start", "-j", "2"], repo, env)
    status = wait_for_queue(repo, env)
    assert "Failed" not in status, status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    found = experiments(shown)
    assert sorted(v["lr"] for v in found.values()) == [0.002, 0.004], found
    assert all(0 < v["accuracy"] <= 1 for v in found.values()), found

    # sorted by a metric, as docs/search.md shows; then bring the best one into the workspace
    table = run(["dvc", "exp", "show", "--csv", "--sort-by", "metrics/usps/eval.json:accuracy",
                 "--sort-order", "desc"], repo, env).stdout  # fmt: skip
    assert "accuracy" in table.splitlines()[0]
    best = max(found, key=lambda name: found[name]["accuracy"])
    run(["dvc", "exp", "apply", best], repo, env)
    applied = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"]
    assert applied == found[best]["lr"]
    metrics = json.loads((repo / "metrics/usps/eval.json").read_text())
    assert metrics["accuracy"] == found[best]["accuracy"]
