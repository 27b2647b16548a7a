"""compare: the torch model against the baselines, as a table and a bar chart."""

import json
from pathlib import Path

from stages.baselines import METRICS as BASELINES
from stages.evaluate import METRICS as TORCH
from tandem import evaluation, io

PARAMS = ()
TABLE = "reports/comparison.md"
CHART = "reports/comparison.png"


def run(params) -> None:
    rows = {"torch": json.loads(Path(TORCH).read_text())}
    rows.update(json.loads(Path(BASELINES).read_text()))
    io.write_text(TABLE, evaluation.comparison_table(rows))
    evaluation.plot_model_comparison({m: r["accuracy"] for m, r in rows.items()}, CHART)
