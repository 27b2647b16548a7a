"""Reproducibility and crash safety of the real pipeline (slow, end to end, like test_pipeline):

- two runs from clean copies give identical dvc.lock hashes for every output, even when one of
  them was SIGKILLed in the middle of training and resumed from its checkpoint;
- a stage SIGKILLed while it writes its outputs leaves every previous output whole (or absent),
  never truncated, and the next `dvc repro` completes;
- reverting a param after an experiment restores the outputs from DVC's run-cache, no retraining.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_project, offline_env
from test_pipeline import SMALL, _merge, commit, repro, run, set_params

pytestmark = pytest.mark.slow

# the wrapper kills its own process (SIGKILL: no cleanup, no `finally`) at the moment it is about
# to rename the N-th finished temp file onto TARGET, i.e. in the middle of writing outputs
KILLER = textwrap.dedent("""
    import os, signal, sys
    target, nth = sys.argv[1], int(sys.argv[2])
    seen, real = 0, os.replace
    def replace(src, dst, *args, **kwargs):
        global seen
        if os.path.normpath(os.fspath(dst)).endswith(os.path.normpath(target)):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    from tandem.cli import app
    sys.argv = ["tandem", *sys.argv[3:]]
    app()
""")


def make_repo(tmp: Path, name: str) -> tuple[Path, dict]:
    env = offline_env(tmp / f"{name}-openml-cache")
    repo = copy_project(tmp / name, clean=True)
    small = _merge(yaml.safe_load((repo / "params.yaml").read_text()), SMALL)
    small["train"].update(max_epochs=3, lr_schedule="onecycle")  # a scheduler to restore too
    # an image entry (a classifier) and a tabular regressor with its target scaler: every kind
    # of output (a tabular classifier's outputs are the image one's, with a tabular preprocessor)
    small["datasets"] = {k: small["datasets"][k] for k in ("usps", "cpu")}
    (repo / "params.yaml").write_text(yaml.safe_dump(small, sort_keys=False))
    # the per-entry chain: cv and tune are fits like train's (seeded the same way), and summary
    # reads metrics; leaving them out keeps two full runs to a few minutes
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if "foreach" in v}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run(["git", "init", "-q"], repo, env)
    commit(repo, env, "init")
    return repo, env


def out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out.get("md5")
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])
    }


def killed(repo: Path, env: dict, target: str, nth: int, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, target, str(nth), *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro")
    return make_repo(tmp, "a"), make_repo(tmp, "b")


def test_identical_runs_even_across_a_sigkill_and_the_run_cache(repos):
    (a, env_a), (b, env_b) = repos

    # run A: straight through
    repro(a, env_a)
    first = out_hashes(a)
    assert first and all(first.values())

    # run B: SIGKILLed while writing the checkpoint after epoch 2, so epoch 1's is the last one
    run(["dvc", "repro", "preprocess@usps"], b, env_b)
    killed(b, env_b, "checkpoints/usps.pt", 2, "train", "--dataset", "usps")
    state = torch.load(b / "checkpoints" / "usps.pt", weights_only=True)  # whole, not truncated
    assert len(state["loop"]["history"]) == 1 and not state["complete"]
    assert not (b / "models/usps/model").exists() and not (b / "metrics/usps/train.json").exists()
    repro(b, env_b)  # train goes on from epoch 2
    assert torch.load(b / "checkpoints" / "usps.pt", weights_only=True)["complete"]
    second = out_hashes(b)
    differing = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
    assert not differing, f"{len(differing)} outputs differ: {differing}"

    # A: an experiment, then the param reverted: DVC's run-cache gives the old outputs back
    commit(a, env_a, "first run")
    run(["dvc", "exp", "run", "-S", "++datasets.usps.train.lr=0.002"], a, env_a)
    model = "train@usps:models/usps/model"
    assert out_hashes(a)[model] != first[model]
    run(["git", "checkout", "--", "params.yaml"], a, env_a)
    log = run(["dvc", "repro"], a, env_a).stdout
    assert "Running stage 'train@usps'" not in log, log
    assert "Stage 'train@usps' is cached - skipping run, checking out outputs" in log, log
    assert out_hashes(a) == first


def test_sigkill_while_writing_outputs_leaves_them_whole(repos):
    (a, _), (b, env_b) = repos
    files = ("metrics/usps/train.json", "dvclive/usps/metrics.json")
    before = {p: (b / p).read_bytes() for p in files}
    set_params(b, train__lr=0.004)
    # killed as it renames metrics/usps/train.json into place: the model is already the new one
    killed(b, env_b, "metrics/usps/train.json", 1, "train", "--dataset", "usps")
    assert (b / "metrics/usps/train.json").read_bytes() == before["metrics/usps/train.json"]
    from tandem import TorchClassifier

    TorchClassifier.load(b / "models/usps/model")  # whole: loads
    for path in (b / "metrics").rglob("*.json"):
        yaml.safe_load(path.read_text())  # every JSON output parses (none truncated)
    stages = repro(b, env_b)
    assert "train@usps" in stages
    status = run(["dvc", "status"], b, env_b).stdout
    assert "changed" not in status, status
