"""export: the preprocessor and the network as one ONNX file (+ TorchScript), checked on test.

The ONNX graph goes from raw columns to probabilities; it is written only when onnxruntime agrees
with the Python pipeline (skops preprocessor + torch model) on the whole test split: every label
the same and probabilities within 1e-5. The comparison is the stage's metric.
"""

from pathlib import Path

from stages.layout import layout
from tandem import export, inference, io

PARAMS = ()
TABULAR_PARAMS = ()


def run(params, dataset: str | None = None) -> None:
    paths = layout(dataset)
    pipe = inference.load(Path(paths.preprocessor).parent)
    report = export.export(pipe, io.read_parquet(paths.test))
    io.write_json(Path(paths.eval_metrics).with_name("export.json"), report)
