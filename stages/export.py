"""export: the served model as one ONNX file (+ TorchScript and serving.json), checked on test.

The served model is the one the evaluate stage scores, from the same keys: an image classifier
whose ``evaluate.tta`` is on is served with test-time augmentation, and classes are named by
the entry's ``label_names`` (renaming a label reruns this stage and evaluate, never training). The
ONNX graph goes from raw columns to probabilities; it is written only when onnxruntime agrees
with the Python pipeline (skops preprocessor + torch model, augmented where served) on the whole
test split: every label the same and probabilities within 1e-5. metrics/<name>/export.json
records the comparison, what is served (``served``: "tta" or "plain") and the exported file's
test ``accuracy``, the number eval.json's headline must equal.
"""

from stages.layout import layout
from tandem import config, export, inference, io

# evaluate.tta and the label names alone: the figures' settings (n_worst) do not re-export
PARAMS = (
    "evaluate.tta", "datasets.{name}.data", "datasets.{name}.evaluate",
    "datasets.{name}.label_names",
)  # fmt: skip


def serving(params, name: str) -> inference.Serving:
    """What the entry serves: its evaluate recipe's tta (null but for image classifiers) and its
    label_names, as the evaluate stage reads them."""
    p = config.recipe(params, name, "evaluate")
    return inference.Serving(tta=bool(p.tta), label_names=params.datasets[name].label_names)


def run(params, name: str) -> None:
    paths = layout(name)
    pipe = inference.load(paths.models)
    test = io.read_parquet(paths.test)
    report = export.export(
        pipe, test, serving=serving(params, name), target=params.datasets[name].data.target
    )
    io.write_json(paths.metrics("export"), report)
