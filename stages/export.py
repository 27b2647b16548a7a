"""export: the preprocessor and the network as one ONNX file (+ TorchScript), checked on test.

The ONNX graph goes from raw columns to probabilities; it is written only when onnxruntime agrees
with the Python pipeline (skops preprocessor + torch model) on the whole test split: every label
the same and probabilities within 1e-5. The comparison is the stage's metric.
"""

from stages.layout import layout
from tandem import export, inference, io

PARAMS = ()


def run(params, name: str) -> None:
    paths = layout(name)
    pipe = inference.load(paths.models)
    test = io.read_parquet(paths.test)
    report = export.export(pipe, test)
    io.write_json(paths.metrics("export"), report)
