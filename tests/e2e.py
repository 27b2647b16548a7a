"""The end-to-end tests' project: the real pipeline under `dvc repro` in a temporary git repo, on
a copy of the shared offline OpenML cache, with smaller numbers. Its first full run is made once
per test session (conftest's ``pipeline_run``) and shared: test_pipeline goes on from it, and
compares a second, clean run against the hashes it recorded."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from conftest import ROOT, copy_project, offline_env

PER_ENTRY = ("resolve", "fetch", "split", "preprocess", "train", "evaluate", "export", "baselines")
CHAIN = PER_ENTRY[1:]  # from the data on: what editing an entry's data reruns
DEFAULT = ("usps",)  # kept from the default registry
ADDED = ("mycsv", "digits", "diabetes")
ENTRIES = (*DEFAULT, *ADDED)
ALL_STAGES = {f"{s}@{d}" for s in PER_ENTRY for d in ENTRIES} | {
    "ensemble@usps", "summary", "cv", "tune"
}  # fmt: skip
GIT = ["git", "-c", "user.name=tandem-test", "-c", "user.email=test@tandem.invalid"]

# the real pipeline with smaller numbers, so a full run takes a few minutes on 2 cores; three
# epochs under onecycle, so a resumed checkpoint must restore the scheduler too
SMALL = {
    "train": {"module": "mlp", "module_kwargs": {"mlp": {"hidden_sizes": [64]}}, "max_epochs": 3,
              "min_steps": 0, "lr_schedule": "onecycle", "patience": None},
    "baselines": {"linear": {"max_iter": 30}, "random_forest": {"n_estimators": 10},
                  "hist_gradient_boosting": {"max_iter": 5}},
    "cv": {"folds": 3, "max_rows": 300, "max_epochs": 1},
    "tune": {"max_rows": 300},
    "ensemble": {"members": 2},
}  # fmt: skip
# the entries a user adds: params alone, plus the data under data/sources/
NO_OVERRIDES = {s: {} for s in ("split", "preprocess", "train", "evaluate", "baselines")}
NEW_ENTRIES = {
    "mycsv": {**NO_OVERRIDES, "data": {
        "source": "file", "path": "data/sources/file/mycsv.csv", "target": "label",
        "task": "classification", "drop": ["id"]}},
    "digits": {**NO_OVERRIDES, "data": {
        "source": "images", "path": "data/sources/images/digits", "target": "digit",
        "task": "classification", "modality": "image", "image_shape": [8, 8], "channels": 1},
        "train": {"module": "auto"}},  # the CNN, on 8x8 images
    "diabetes": {**NO_OVERRIDES, "data": {
        "source": "sklearn", "name": "load_diabetes", "target": "target", "task": "regression"}},
}  # fmt: skip


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "module_kwargs":
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def repro(repo: Path, env: dict) -> set[str]:
    """Run `dvc repro`; return the names of the stages that actually ran."""
    out = run(["dvc", "repro"], repo, env).stdout
    return set(re.findall(r"Running stage '([^']+)'", out))


def set_params(repo: Path, **changes) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def commit(repo: Path, env: dict, message: str) -> None:
    """Commit everything, if anything changed (a run restored from the run-cache may not)."""
    run([*GIT, "add", "-A"], repo, env)
    if run(["git", "status", "--porcelain"], repo, env).stdout.strip():
        run([*GIT, "commit", "-qm", message], repo, env)


def out_hashes(repo: Path) -> dict[str, str]:
    """``stage:path`` -> md5 of every output in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out.get("md5")
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])
    }


def make_project(dest: Path, env: dict, entries: dict, *, clean: bool = False) -> Path:
    """A git repo holding the project with the SMALL numbers and ``entries`` as its registry."""
    repo = copy_project(dest, clean=clean)
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()), SMALL)
    params["datasets"] = entries
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo, env)
    return repo


def write_sources(repo: Path) -> None:
    """A CSV with numbers, a category and an id column; PNGs of sklearn's 8x8 digits, a third of
    them saved at 16x16 (mixed sizes are resized to image_shape)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.RandomState(0)
    n = 240
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x1 + 0.5 * x2 + (colour == "red") > 0.3, "yes", "no")
    frame = pd.DataFrame({"id": np.arange(n), "x1": x1.round(4), "x2": x2.round(4),
                          "colour": colour, "label": label})  # fmt: skip
    frame.to_csv(repo / "data/sources/file/mycsv.csv", index=False)
    digits = load_digits()
    for i in range(400):
        folder = repo / "data/sources/images/digits" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L")
        if i % 3 == 0:
            image = image.resize((16, 16), Image.Resampling.NEAREST)
        image.save(folder / f"{i:04d}.png")


@dataclass(frozen=True)
class PipelineRun:
    repo: Path
    env: dict
    entries: dict  # the registry it ran with
    first_stages: frozenset[str]  # what its first `dvc repro` ran
    first_hashes: dict[str, str]  # out_hashes after that run, before any test changed anything


def first_pipeline_run(tmp: Path) -> PipelineRun:
    """USPS from the default registry plus one entry of each other source kind, added by params
    alone (a CSV tracked with `dvc add`, an image folder, a sklearn loader); one full `dvc repro`,
    committed."""
    env = offline_env(tmp / "openml-cache")
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]
    entries = {k: defaults[k] for k in DEFAULT} | NEW_ENTRIES
    for name in DEFAULT:  # the entry's own recipe (USPS's CNN, augmentation, EMA), SMALL's length
        entries[name]["train"] |= {"module": "auto", "max_epochs": SMALL["train"]["max_epochs"]}
    repo = make_project(tmp / "repo", env, entries)
    write_sources(repo)
    run(
        ["dvc", "add", "-q", "data/sources/file/mycsv.csv", "data/sources/images/digits"], repo, env
    )
    commit(repo, env, "init")
    stages = frozenset(repro(repo, env))
    hashes = out_hashes(repo)
    commit(repo, env, "first run")
    return PipelineRun(repo, env, entries, stages, hashes)
