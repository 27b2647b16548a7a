"""summary: every entry of the registry and every model (seed ensembles too) in one table
(Markdown + CSV) and a chart with one panel per data set (accuracy or R²: the baselines' one
score). The numbers stay in each entry's metrics files; these are reports."""

import json
from pathlib import Path

import pandas as pd

from stages.layout import layout
from tandem import evaluation, io

PARAMS = ("datasets", "ensemble.datasets")
TABLE = "reports/summary.md"
CSV = "reports/summary.csv"
CHART = "reports/summary.png"


def run(params, name: None = None) -> None:  # over every entry: no single data set
    rows, groups, metrics, sections = [], {}, {}, []
    for entry_name in params.datasets:
        paths = layout(entry_name)
        models = {"torch": json.loads(Path(paths.metrics("eval")).read_text())}
        if entry_name in params.ensemble.datasets:
            models["torch ensemble"] = json.loads(Path(paths.metrics("ensemble")).read_text())
        models.update(json.loads(Path(paths.metrics("baselines")).read_text()))
        metric = evaluation.headline(models["torch"])
        metrics[entry_name] = "R²" if metric == "r2" else metric
        groups[entry_name] = {model: scores[metric] for model, scores in models.items()}
        rows += [{"dataset": entry_name, "model": m, **s} for m, s in models.items()]
        sections.append(f"## {entry_name}\n\n{evaluation.comparison_table(models)}")
    io.write_text(TABLE, "# Torch model and baselines, per data set\n\n" + "\n".join(sections))
    io.write_text(CSV, pd.DataFrame(rows).to_csv(index=False))
    evaluation.plot_grouped_comparison(groups, CHART, metrics)
