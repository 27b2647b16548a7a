"""Shared fixtures: the project root, an offline OpenML cache built from scikit-learn's own test
data (hermetic: no network, no ../shared), and a tiny copy of the project for CLI runs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CACHE = ROOT.parent / "shared" / "data" / "openml-cache"
BIN = Path(sys.executable).parent


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's `tandem` and `dvc` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_project(dest: Path, *, clean: bool = False) -> Path:
    """The project's files as a fresh clone has them (tracked, plus untracked files git does not
    ignore) copied to ``dest``; ``clean`` leaves out the committed results of the real run."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    if clean:
        for result in ("dvc.lock", "metrics", "reports", "dvclive"):
            path = dest / result
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return dest


def offline_env(cache_dest: Path, **extra: str) -> dict[str, str]:
    """Copy the shared OpenML cache (scikit-learn deletes files it cannot parse, so never the
    original) and return a tool environment reading it; skip the test when it is absent."""
    if not SHARED_CACHE.is_dir():
        pytest.skip(
            f"end-to-end test needs the offline OpenML cache at {SHARED_CACHE} "
            "(../shared beside the project); a user's clone without it skips this test"
        )
    shutil.copytree(SHARED_CACHE, cache_dest)
    return tool_env(SCIKIT_LEARN_DATA=str(cache_dest), DVC_NO_ANALYTICS="1", **extra)


def build_openml_cache(dest: Path, data_ids: list[int]) -> Path:
    """Lay out scikit-learn's recorded OpenML answers the way fetch_openml caches them."""
    import sklearn

    src = Path(sklearn.__file__).parent / "datasets" / "tests" / "data" / "openml"
    api = dest / "openml" / "openml.org" / "api" / "v1" / "json" / "data"
    for data_id in data_ids:
        folder = src / f"id_{data_id}"
        (api / "features").mkdir(parents=True, exist_ok=True)
        (api / "qualities").mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"api-v1-jd-{data_id}.json.gz", api / f"{data_id}.gz")
        shutil.copy(folder / f"api-v1-jdf-{data_id}.json.gz", api / "features" / f"{data_id}.gz")
        quality = folder / f"api-v1-jdq-{data_id}.json.gz"
        if quality.exists():
            shutil.copy(quality, api / "qualities" / f"{data_id}.gz")
        details = json.loads(gzip.decompress((api / f"{data_id}.gz").read_bytes()))
        file_id = details["data_set_description"]["file_id"]
        arff = next(folder.glob("data-v1-dl-*.arff.gz"))
        out = dest / "openml" / "openml.org" / "data" / "v1" / "download" / str(file_id)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(arff, out / f"{details['data_set_description']['name']}.arff.gz")
    return dest


@pytest.fixture
def openml_cache(tmp_path: Path) -> Path:
    """An OpenML cache holding iris (61) and cpu (561) from scikit-learn's test data."""
    return build_openml_cache(tmp_path / "openml-cache", [61, 561])


def usps_like(rows: int, classes: int = 2, *, at: tuple[Path, ...] = ()):
    """Random 16x16 'digits' as the USPS stages read them (columns int0..int255, target "class"
    with labels "1".."k"); the class shifts the pixels' mean, so it can be learnt. Written as
    parquet to each path in ``at``."""
    import numpy as np
    import pandas as pd

    labels = np.arange(rows) % classes
    X = np.random.RandomState(0).normal(size=(rows, 256)) + labels[:, None] * 0.3
    frame = pd.DataFrame(X.astype("float32"), columns=[f"int{i}" for i in range(256)])
    frame["class"] = (labels + 1).astype(str)
    for path in at:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    return frame


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's pipeline files (no data) to run stages in."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The end-to-end project after its first full `dvc repro` (tests/e2e.py), made once per
    session: test_pipeline goes on from it, and compares a second, clean run with it."""
    from e2e import first_pipeline_run

    return first_pipeline_run(tmp_path_factory.mktemp("e2e"))


def pytest_collection_modifyitems(config, items):
    """The end-to-end file first: under xdist (--dist loadfile) one worker runs it, the longest
    chain of the suite, while the others share every other file."""
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")
