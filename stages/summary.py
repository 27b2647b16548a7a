"""summary: every tabular data set and model in one table (JSON metric + CSV) and a bar chart."""

import json
from pathlib import Path

import pandas as pd

from tandem import evaluation, io

PARAMS = ()
METRICS_DIR = "metrics/tabular"
SUMMARY = "metrics/tabular_summary.json"
TABLE = "reports/tabular_summary.csv"
CHART = "reports/tabular_summary.png"


def run(params, dataset: str | None = None) -> None:
    summary, rows = {}, []
    for folder in sorted(p for p in Path(METRICS_DIR).iterdir() if p.is_dir()):
        models = {"torch_mlp": json.loads((folder / "eval.json").read_text())}
        models.update(json.loads((folder / "baselines.json").read_text()))
        summary[folder.name] = models
        for model, scores in models.items():
            rows.append({"dataset": folder.name, "model": model, **scores})
    io.write_json(SUMMARY, summary)
    io.write_text(TABLE, pd.DataFrame(rows).to_csv(index=False))
    # one panel per data set, with its headline score: accuracy (classification) or R²
    groups, metrics = {}, {}
    for row in rows:
        metric = "accuracy" if "accuracy" in row else "r2"
        groups.setdefault(row["dataset"], {})[row["model"]] = row[metric]
        metrics[row["dataset"]] = "R²" if metric == "r2" else metric
    evaluation.plot_grouped_comparison(groups, CHART, metrics)
