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
    # the headline score of each data set: accuracy for classification, R² for regression
    headline = {
        f"{row['dataset']} / {row['model']}": row.get("accuracy", row.get("r2")) for row in rows
    }
    evaluation.plot_model_comparison(headline, CHART, metric="accuracy or R²")
