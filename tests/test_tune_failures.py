"""The tune stage with candidates whose fits raise: failures are counted in the search summary,
and a search none of whose candidates succeeded stops the stage with a clear error before
anything is written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import usps_like
from typer.testing import CliRunner

from tandem import TorchClassifier

TINY = (
    "tune.estimator={module: mlp, module__hidden_sizes: [8], lr: 0.01, max_epochs: 1, "
    "validation_fraction: 0.0}"
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tune(project, monkeypatch, space: str):
    """``tandem tune`` in-process on 90 rows, 3 folds, the given space; (exit code, output)."""
    from tandem import cli

    usps_like(90, classes=3, at=(project / "data/usps/train.parquet",))
    monkeypatch.chdir(project)
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    args = ["tune", "--set", TINY, "--set", f"tune.space={space}", "--set", "tune.folds=3"]
    result = CliRunner().invoke(cli.app, args)
    return result.exit_code, re.sub(r"\x1b\[[0-9;]*m", "", result.output)


def nothing_written(project) -> bool:
    return not any((project / d).exists() for d in ("search", "models", "reports", "logs"))


def test_failed_candidates_are_counted(project, monkeypatch):
    code, output = tune(project, monkeypatch, "{lr: [0.01, -1.0]}")  # lr -1: every fit raises
    assert code == 0, output
    assert "1 of 2 candidates failed (3 of 6 fits raised an error)" in output
    summary = json.loads((project / "models/tune/search.json").read_text())
    assert summary["n_candidates"] == 2 and summary["n_failed"] == 1
    assert summary["n_failed_fits"] == 3
    assert summary["best_params"] == {"lr": 0.01}
    scores = json.loads((project / "search/tune/best.json").read_text())
    assert scores.pop("failed_candidates") == 1  # the metric counts them
    assert all(isinstance(s["mean"], float) for s in scores.values())  # the best one's, finite


def test_a_search_whose_every_fit_fails_is_an_error(project, monkeypatch):
    code, output = tune(project, monkeypatch, "{lr: [-1.0, -2.0]}")
    assert code == 1, output
    assert "every candidate failed" in output and "lr" in output
    assert nothing_written(project)


def test_a_search_whose_every_candidate_has_a_failed_fit_is_an_error(project, monkeypatch):
    """Each candidate's first fold raises, its others succeed: no candidate has a score."""
    fit, calls = TorchClassifier.fit, []

    def first_fold_fails(self, X, y, **kwargs):
        calls.append(len(y))
        if len(calls) % 3 == 1:  # fits run candidate by candidate, fold by fold (n_jobs 1)
            raise RuntimeError("a fit that fails")
        return fit(self, X, y, **kwargs)

    monkeypatch.setattr(TorchClassifier, "fit", first_fold_fails)
    code, output = tune(project, monkeypatch, "{lr: [0.01, 0.02]}")
    assert code == 1, output
    assert "2 of 2 candidates failed (2 of 6 cross-validation fits raised an error" in output
    assert "no best one" in output
    assert nothing_written(project)
