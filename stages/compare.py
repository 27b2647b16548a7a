"""compare: the torch model against the baselines, as a table and a bar chart (USPS)."""

import json
from pathlib import Path

from stages.layout import USPS
from tandem import evaluation, io

PARAMS = ()
TABLE = "reports/comparison.md"
CHART = "reports/comparison.png"


def run(params, dataset: str | None = None) -> None:
    rows = {"torch": json.loads(Path(USPS.eval_metrics).read_text())}
    rows.update(json.loads(Path(USPS.baselines_metrics).read_text()))
    io.write_text(TABLE, evaluation.comparison_table(rows))
    evaluation.plot_model_comparison({m: r["accuracy"] for m, r in rows.items()}, CHART)
