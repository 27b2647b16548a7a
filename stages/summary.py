"""summary: every entry of the registry and every model (seed ensembles too) in one table
(Markdown + CSV) and a chart with one panel per data set (accuracy or R²: the baselines' one
score). The numbers stay in each entry's metrics files; these are reports.

Each entry's first row, ``torch (served)``, is eval.json: the model the export stage serves, its
headline (with test-time augmentation where ``accuracy_plain`` gives the plain network beside
it). A seed ensemble is scored beside it as ``torch ensemble`` and is not served; the baselines
are references."""

import json
from pathlib import Path

import pandas as pd

from stages.layout import layout
from tandem import evaluation, io

PARAMS = ("datasets", "ensemble.datasets")
TABLE = "reports/summary.md"
CSV = "reports/summary.csv"
CHART = "reports/summary.png"
SERVED = "torch (served)"
ENSEMBLE = "torch ensemble"


def note(served: dict, ensemble: bool) -> str:
    """What the rows are: which one is served, and what is only scored beside it."""
    parts = [f"`{SERVED}` is the exported model, whose score is the headline"]
    if "accuracy_plain" in served:
        parts[0] += " (with test-time augmentation; `accuracy_plain`: its network alone)"
    if ensemble:
        parts.append(f"`{ENSEMBLE}` is scored beside it and is not served")
    return "; ".join(parts) + ".\n\n"


def run(params, name: None = None) -> None:  # over every entry: no single data set
    rows, groups, metrics, sections = [], {}, {}, []
    for entry_name in params.datasets:
        paths = layout(entry_name)
        models = {SERVED: json.loads(Path(paths.metrics("eval")).read_text())}
        ensemble = entry_name in params.ensemble.datasets
        if ensemble:
            models[ENSEMBLE] = json.loads(Path(paths.metrics("ensemble")).read_text())
        models.update(json.loads(Path(paths.metrics("baselines")).read_text()))
        metric = evaluation.headline(models[SERVED])
        metrics[entry_name] = "R²" if metric == "r2" else metric
        groups[entry_name] = {model: scores[metric] for model, scores in models.items()}
        rows += [{"dataset": entry_name, "model": m, **s} for m, s in models.items()]
        table = evaluation.comparison_table(models)
        sections.append(f"## {entry_name}\n\n{note(models[SERVED], ensemble)}{table}")
    io.write_text(TABLE, "# Torch model and baselines, per data set\n\n" + "\n".join(sections))
    io.write_text(CSV, pd.DataFrame(rows).to_csv(index=False))
    evaluation.plot_grouped_comparison(groups, CHART, metrics)
