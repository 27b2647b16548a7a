"""Where the benchmarks read USPS from: an OpenML cache, never the shared one itself (scikit-learn
deletes cache files it fails to parse, so the shared cache is only ever read through a copy)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import fetch_openml

REPO = Path(__file__).resolve().parents[1]
SHARED_CACHE = REPO.parent / "shared" / "data" / "openml-cache"
USPS_ID = 41070


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_usps(data_home: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(X float32, y str, where it was read from). Never lets sklearn touch the shared cache."""
    tmp = None
    home = data_home or os.environ.get("SCIKIT_LEARN_DATA")
    if home and _same_path(Path(home), SHARED_CACHE):
        print(f"note: {home} is the shared cache itself; reading a temporary copy of it instead")
        home = None
    if not home:
        if not SHARED_CACHE.is_dir():
            sys.exit(
                f"no OpenML cache at {SHARED_CACHE}; pass --data-home or set SCIKIT_LEARN_DATA"
            )
        tmp = tempfile.mkdtemp(prefix="usps-openml-")
        shutil.copytree(SHARED_CACHE, tmp, dirs_exist_ok=True)
        home = tmp
    try:
        X, y = fetch_openml(
            data_id=USPS_ID, as_frame=False, parser="liac-arff", data_home=home, return_X_y=True
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    where = f"copy of {SHARED_CACHE}" if tmp is not None else home
    return np.asarray(X, dtype=np.float32), np.asarray(y).astype(str), where
