"""One ONNX file from raw features to probabilities, checked against the Python pipeline.

The fitted sklearn preprocessor is converted with skl2onnx, the served network with torch.onnx
(dynamic batch axis, softmax appended), and the two graphs are merged into one, so that a
deployment applies exactly the preprocessing used in training. The served network is what the
evaluate stage scores: an image classifier whose entry has ``evaluate.tta`` is exported as its
test-time augmented network (``models.ShiftAveraged``: the image and its 1-pixel shifts, mean
probabilities), in one graph. Inputs are the raw columns:

- an image model (a scaler over the pixels) takes one float tensor ``features`` of shape (N, F),
  in the column order of ``feature_names`` (stored in the file's metadata);
- a ColumnTransformer model (tabular, numbers only or not) takes one input per raw column:
  float (N, 1) for numeric columns (NaN is imputed in the graph), string (N, 1) for categorical
  ones (the empty string stands for a missing value).

Outputs: ``probabilities`` (N, n_classes) float32 and ``label`` (N,) for a classifier, or
``prediction`` (N,) for a regressor. A classifier's classes are the served ones: named by
the entry's ``label_names`` (USPS's "10" is the digit "9"), in natural order ("1", "2", ..., "10");
the metadata's ``classes`` lists them in the order of the probabilities' columns, ``served``
says ``"tta"`` or ``"plain"``. skl2onnx's own OneHotEncoder converter cannot map unknown
categories onto the "infrequent" column (handle_unknown="infrequent_if_exist"), so tandem
converts OneHotEncoder itself (``_convert_one_hot``): a LabelEncoder from category to output
position, then a comparison with the positions.
"""

from __future__ import annotations

import copy
import io as _io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tandem import io
from tandem.inference import (
    METADATA_KEY,
    ONNX_FILE,
    SERVING_FILE,
    TORCHSCRIPT_FILE,
    InputError,
    OnnxModel,
    Pipeline,
    Serving,
    check_serving,
    prepare_frame,
)

OPSET = 18
ML_OPSET = 3
TOLERANCE = 1e-5


# ------------------------------------------------------------------------------ sklearn part
def _one_hot_positions(encoder, index: int) -> tuple[list[str], list[int], int, int]:
    """(categories as strings, output position of each, position for unknowns, n outputs)."""
    cats = [str(c) for c in encoder.categories_[index]]
    out = [str(c) for c in encoder._compute_transformed_categories(index)]
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(cats))[index]
    infrequent = {str(c) for c in infrequent} if infrequent is not None else set()
    n_frequent = len(out) - (1 if infrequent else 0)
    positions = []
    for c in cats:
        positions.append(n_frequent if c in infrequent else out.index(c))
    unknown = -1
    if infrequent and encoder.handle_unknown in ("infrequent_if_exist", "warn"):
        unknown = n_frequent
    return cats, positions, unknown, len(out)


def _shape_one_hot(operator) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    encoder = operator.raw_operator
    n = sum(
        len(encoder._compute_transformed_categories(i)) for i in range(len(encoder.categories_))
    )
    batch = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([batch, n])


def _convert_one_hot(scope, operator, container) -> None:
    """OneHotEncoder over string columns, unknown and infrequent categories as sklearn does."""
    from onnx import TensorProto

    encoder = operator.raw_operator
    if encoder.drop is not None:
        raise NotImplementedError("tandem's ONNX export does not support OneHotEncoder(drop=...)")
    columns = []  # (input name, index within that input)
    for inp in operator.inputs:
        width = inp.type.shape[1]
        if not isinstance(width, int):
            raise RuntimeError(f"OneHotEncoder input {inp.full_name} has an unknown width")
        columns.extend((inp.full_name, j) for j in range(width))
    if len(columns) != len(encoder.categories_):
        raise RuntimeError(
            f"OneHotEncoder has {len(encoder.categories_)} columns, inputs give {len(columns)}"
        )
    parts = []
    for index, (name, j) in enumerate(columns):
        cats, positions, unknown, n_out = _one_hot_positions(encoder, index)
        col = scope.get_unique_variable_name(f"ohe_col{index}")
        at = scope.get_unique_variable_name(f"ohe_at{index}")
        container.add_initializer(at, TensorProto.INT64, [1], [j])
        container.add_node("Gather", [name, at], [col], axis=1)  # (N, 1)
        pos = scope.get_unique_variable_name(f"ohe_pos{index}")
        container.add_node(
            "LabelEncoder", [col], [pos], op_domain="ai.onnx.ml", op_version=2,
            keys_strings=cats, values_int64s=positions, default_int64=unknown,
        )  # fmt: skip
        grid = scope.get_unique_variable_name(f"ohe_grid{index}")
        container.add_initializer(grid, TensorProto.INT64, [1, n_out], list(range(n_out)))
        hit = scope.get_unique_variable_name(f"ohe_hit{index}")
        container.add_node("Equal", [pos, grid], [hit])  # (N, n_out)
        part = scope.get_unique_variable_name(f"ohe_part{index}")
        container.add_node("Cast", [hit], [part], to=TensorProto.FLOAT)
        parts.append(part)
    container.add_node("Concat", parts, [operator.outputs[0].full_name], axis=1)


def _shape_identity(operator) -> None:
    operator.outputs[0].type = operator.inputs[0].type.__class__(operator.inputs[0].type.shape)


def _convert_identity(scope, operator, container) -> None:
    container.add_node("Identity", [operator.inputs[0].full_name], [operator.outputs[0].full_name])


def _shape_piecewise(operator) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    n = sum(len(edges) - 1 for edges in operator.raw_operator.edges_)
    operator.outputs[0].type = FloatTensorType([operator.inputs[0].get_first_dimension(), n])


def _convert_piecewise(scope, operator, container) -> None:
    """features.PiecewiseLinearEncoder: clip((x - left edge) / bin width, 0, 1) for every bin."""
    from onnx import TensorProto

    edges = operator.raw_operator.edges_
    columns = [j for j, e in enumerate(edges) for _ in range(len(e) - 1)]
    left = np.concatenate([e[:-1] for e in edges]).astype(np.float32)
    width = np.concatenate([np.diff(e) for e in edges]).astype(np.float32)
    names = {}
    for key, values, kind in (
        ("columns", np.asarray(columns, dtype=np.int64), TensorProto.INT64),
        ("left", left, TensorProto.FLOAT), ("width", width, TensorProto.FLOAT),
        ("zero", np.zeros(1, np.float32), TensorProto.FLOAT),
        ("one", np.ones(1, np.float32), TensorProto.FLOAT),
    ):  # fmt: skip
        names[key] = scope.get_unique_variable_name(f"pwl_{key}")
        shape = [] if key in ("zero", "one") else [len(values)]
        container.add_initializer(names[key], kind, shape, values.ravel().tolist())
    wide, shifted, scaled = (scope.get_unique_variable_name(f"pwl_{k}") for k in "wsd")
    container.add_node("Gather", [operator.inputs[0].full_name, names["columns"]], [wide], axis=1)
    container.add_node("Sub", [wide, names["left"]], [shifted])
    container.add_node("Div", [shifted, names["width"]], [scaled])
    container.add_node(
        "Clip", [scaled, names["zero"], names["one"]], [operator.outputs[0].full_name]
    )


def _custom_converters() -> tuple[dict, dict]:
    """(shape calculators, converters) tandem supplies to skl2onnx for this conversion only."""
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    from tandem import features

    shapes = {
        OneHotEncoder: _shape_one_hot, FunctionTransformer: _shape_identity,
        features.PiecewiseLinearEncoder: _shape_piecewise,
    }  # fmt: skip
    converters = {
        OneHotEncoder: _convert_one_hot, FunctionTransformer: _convert_identity,
        features.PiecewiseLinearEncoder: _convert_piecewise,
    }  # fmt: skip
    return shapes, converters


def _for_onnx(preprocessor, categorical: list[str]):
    """A copy whose categorical imputers use "" as the missing value (ONNX has no string NaN)."""
    from sklearn.impute import SimpleImputer

    clone = copy.deepcopy(preprocessor)
    if not categorical:
        return clone
    for branch, step, _ in clone.transformers_:
        if branch != "categorical":
            continue
        for sub in getattr(step, "steps", [(None, step)]):
            est = sub[1]
            if isinstance(est, SimpleImputer):
                est.missing_values = ""
                est.statistics_ = np.asarray([str(s) for s in est.statistics_], dtype=object)
    return clone


def preprocessor_onnx(pipe: Pipeline):
    """The fitted preprocessor as an ONNX model from raw inputs to the network's features."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.preprocessing import FunctionTransformer

    for step in _steps(pipe.preprocessor):
        if isinstance(step, FunctionTransformer) and step.func is not None:
            raise NotImplementedError(f"cannot export a FunctionTransformer with func={step.func}")
    if pipe.by_columns:  # one named input per raw column, as the ColumnTransformer reads them
        kind = {name: StringTensorType([None, 1]) for name in pipe.categorical}
        types = [(name, kind.get(name, FloatTensorType([None, 1]))) for name in pipe.feature_names]
    else:
        types = [("features", FloatTensorType([None, len(pipe.feature_names)]))]
    shapes, converters = _custom_converters()
    return convert_sklearn(
        _for_onnx(pipe.preprocessor, pipe.categorical),
        initial_types=types,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        custom_shape_calculators=shapes,
        custom_conversion_functions=converters,
    )


def _steps(est) -> list[Any]:
    """Every estimator nested in a Pipeline / ColumnTransformer, depth first."""
    out = [est]
    for _, sub, *_ in getattr(est, "steps", []) + list(getattr(est, "transformers_", [])):
        if not isinstance(sub, str):
            out.extend(_steps(sub))
    return out


# ------------------------------------------------------------------------------ torch part
def served_network(pipe: Pipeline):
    """The network the directory serves, as logits in the served class order: the trained module,
    wrapped in ``models.ShiftAveraged`` when it serves test-time augmentation (its output is the
    log of the mean probabilities, so a softmax gives them back), its columns taken in natural
    class order (``pipe.order``). A regressor's network is returned as it is."""
    import torch
    from torch import nn

    from tandem import models

    module = copy.deepcopy(pipe.estimator.module_).to("cpu").float().eval()
    if pipe.task != "classification":
        return module
    if pipe.serving.tta:
        module = models.ShiftAveraged(module, pipe.image_shape).eval()
    order = np.asarray(pipe.order)
    if np.array_equal(order, np.arange(len(order))):
        return module

    class Reorder(nn.Module):
        def __init__(self, net: nn.Module, order: np.ndarray):
            super().__init__()
            self.net = net
            self.register_buffer("order", torch.as_tensor(order, dtype=torch.long))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).index_select(1, self.order)

    return Reorder(module, order).eval()


def _network(pipe: Pipeline):
    """The served network with its output head: softmax, or the target scaler's inverse."""
    import torch
    from torch import nn

    module = served_network(pipe)

    class Classify(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), dim=1)

    class Regress(nn.Module):
        def __init__(self, net: nn.Module, scale: float, shift: float):
            super().__init__()
            self.net, self.scale, self.shift = net, scale, shift

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).reshape(-1) * self.scale + self.shift

    if pipe.task == "classification":
        return Classify(module).eval()
    scaler = pipe.target_scaler
    scale = float(np.ravel(scaler.scale_)[0]) if scaler is not None else 1.0
    shift = float(np.ravel(scaler.mean_)[0]) if scaler is not None else 0.0
    return Regress(module, scale, shift).eval()


def network_onnx(pipe: Pipeline, n_features: int):
    """The network (and head) as ONNX via torch.export, batch axis dynamic."""
    import contextlib
    import io as _io
    import warnings

    import torch

    net = _network(pipe)
    example = torch.zeros(2, n_features)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes=({0: batch},),
            verbose=False,
            optimize=True,
        )
    model = program.model_proto
    _drop_stack_traces(model.graph)
    for function in model.functions:
        _drop_stack_traces(function)
    return model


STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(graph) -> None:
    """The same network, the same bytes wherever tandem is installed: the exporter records
    each node's Python stack trace, with this machine's paths (torch's and tandem's source
    files). Running the model does not need it; the node's other metadata stays."""
    for node in graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                _drop_stack_traces(sub)


def torchscript(pipe: Pipeline, path: str | Path) -> Path:
    """The served network (``served_network``: logits in the served class order, test-time
    augmentation included when served; no preprocessing) as TorchScript, traced on a dummy
    batch."""
    import warnings

    import torch

    module = served_network(pipe)
    n_in = int(pipe.estimator.n_features_in_)
    with warnings.catch_warnings():  # torch.jit is deprecated upstream; still the format asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, torch.zeros(2, n_in))
        buffer = _io.BytesIO()  # not a temp file: its name would become the archive's root
        torch.jit.save(traced, buffer)
    return io.write_bytes(path, _canonical_torchscript(buffer.getvalue()))


def _canonical_torchscript(data: bytes) -> bytes:
    """The same network, the same bytes (and DVC sees no change): torch.jit.save writes a random
    ``serialization_id`` (replaced by a hash of the rest) and ``*.debug_pkl`` files holding the
    Python call stack of the trace, with this machine's paths (dropped: loading does not need
    them, only error messages of the traced code would)."""
    import hashlib
    import zipfile

    with zipfile.ZipFile(_io.BytesIO(data)) as src:
        entries = [
            (info, src.read(info))
            for info in src.infolist()
            if not info.filename.endswith(".debug_pkl")
        ]
    digest = hashlib.sha256()
    for info, content in entries:
        if not info.filename.endswith("serialization_id"):
            digest.update(info.filename.encode() + content)
    out = _io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info, content in entries:
            if info.filename.endswith("serialization_id"):
                content = digest.hexdigest()[: len(content)].encode()
            dst.writestr(info, content)
    return out.getvalue()


# ------------------------------------------------------------------------------ composition
def build_onnx(pipe: Pipeline):
    """Preprocessor + network (+ label lookup) as one ONNX model with tandem's metadata."""
    import onnx
    from onnx import TensorProto, compose, helper

    prep = preprocessor_onnx(pipe)
    version = {o.domain: o.version for o in prep.opset_import}.get("", OPSET)
    if version < OPSET:  # skl2onnx takes the lowest opset its ops need; the network has OPSET
        prep = onnx.version_converter.convert_version(prep, OPSET)
    (prep_out,) = [o.name for o in prep.graph.output]
    width = prep.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if width != pipe.estimator.n_features_in_:
        raise RuntimeError(
            f"the preprocessor gives {width} features, the network takes "
            f"{pipe.estimator.n_features_in_}"
        )
    net = compose.add_prefix(network_onnx(pipe, width), "net/")
    ir = max(prep.ir_version, net.ir_version)
    prep.ir_version = net.ir_version = ir
    merged = compose.merge_models(
        prep, net, io_map=[(prep_out, "net/x")], outputs=["net/y"],
        doc_string="tandem: raw features -> preprocessor (skl2onnx) -> network (torch.onnx)",
    )  # fmt: skip
    graph = merged.graph
    del graph.output[:]
    if pipe.task == "classification":
        graph.node.append(helper.make_node("Identity", ["net/y"], ["probabilities"]))
        graph.node.append(
            helper.make_node("ArgMax", ["net/y"], ["label_index"], axis=1, keepdims=0)
        )
        classes = pipe.classes  # the served names, in the order of the probabilities
        if pipe.serving.label_names is None and pipe.estimator.classes_.dtype.kind in "iub":
            label_type, values = TensorProto.INT64, np.asarray(classes, dtype=np.int64)
        else:
            label_type, values = TensorProto.STRING, [str(c).encode() for c in classes]
        table = helper.make_tensor("classes", label_type, [len(classes)], values)
        graph.initializer.append(table)
        graph.node.append(helper.make_node("Gather", ["classes", "label_index"], ["label"], axis=0))
        graph.output.extend([
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)]),
            helper.make_tensor_value_info("label", label_type, ["N"]),
        ])  # fmt: skip
    else:
        graph.node.append(helper.make_node("Identity", ["net/y"], ["prediction"]))
        graph.output.append(helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N"]))
    meta = {
        "format": "tandem-onnx/1",
        "task": pipe.task,
        "served": pipe.serving.served,  # "tta": the graph is the test-time augmented network
        "classes": pipe.classes,  # as label_names shows them, in the probabilities' order
        "model_classes": pipe.model_classes,  # the labels the network was trained on
        "label_names": pipe.serving.label_names,
        "feature_names": pipe.feature_names,
        "numeric": pipe.numeric,
        "categorical": pipe.categorical,
        "layout": "columns" if pipe.by_columns else "matrix",
        # skl2onnx renames inputs ("education-num" -> "education_num"); columns map to them
        "input_names": [i.name for i in prep.graph.input],
        "image_shape": list(pipe.image_shape) if pipe.is_image else None,
    }
    helper.set_model_props(merged, {METADATA_KEY: json.dumps(meta)})
    merged.producer_name = "tandem"
    graph.name = "tandem"  # merge_models names it from a random uuid: same model, same bytes
    imports = sorted((o.domain, o.version) for o in merged.opset_import)  # merged from a set
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in imports)
    onnx.checker.check_model(merged)
    return merged


# ------------------------------------------------------------------------------ running
def parity(model: OnnxModel, pipe: Pipeline, frame: pd.DataFrame) -> dict[str, Any]:
    """Compare onnxruntime with the Python pipeline (what it serves: test-time augmentation
    included) on the same raw rows."""
    X = prepare_frame(frame, pipe)
    expected = np.asarray(pipe.predict_proba(X))
    got = model.run(X).astype(np.float64)
    diff = float(np.abs(got - expected).max())
    report: dict[str, Any] = {"n_rows": int(len(X)), "max_abs_diff": diff, "tolerance": TOLERANCE}
    if pipe.task == "classification":
        agree = got.argmax(axis=1) == expected.argmax(axis=1)
        report["labels_agree"] = bool(agree.all())
        report["label_mismatches"] = int((~agree).sum())
        report["passed"] = bool(diff <= TOLERANCE and agree.all())
    else:
        scale = max(1.0, float(np.abs(expected).max()))
        report["max_rel_diff"] = diff / scale
        report["passed"] = bool(diff / scale <= TOLERANCE)
    return report


def served_accuracy(model: OnnxModel, pipe: Pipeline, frame: pd.DataFrame, target: str) -> float:
    """Accuracy of the exported file's labels on ``frame``'s ``target`` column: the deployed
    model's score, comparable with eval.json's headline."""
    index = {str(label): i for i, label in enumerate(pipe.model_classes)}
    truth = np.asarray([index.get(str(v), -1) for v in frame[target]])
    got = model.run(prepare_frame(frame, pipe)).argmax(axis=1)
    return float(np.mean(got == truth))


def export(
    pipe: Pipeline,
    frame: pd.DataFrame,
    out_dir: str | Path | None = None,
    *,
    serving: Serving | None = None,
    target: str | None = None,
) -> dict:
    """Write ``model.onnx``, ``model.torchscript.pt`` and ``serving.json``, and check ONNX
    against Python.

    ``serving`` says what to serve (test-time augmentation, label names; default: what ``pipe``
    serves); both files are that model, and ``serving.json`` tells the torch backend. The ONNX
    file is written only once it has passed the parity check on ``frame`` (the test split); a
    failing check raises and leaves the previous files in place. With ``target`` (a column of
    ``frame``) a classifier's report holds the exported file's ``accuracy`` on it.
    """
    import dataclasses

    import onnx

    if serving is not None:
        pipe = dataclasses.replace(pipe, serving=serving)
        check_serving(pipe)
    out_dir = Path(out_dir) if out_dir is not None else pipe.model_dir
    model = build_onnx(pipe)
    target_path = out_dir / ONNX_FILE
    with io.atomic_path(target_path) as tmp:
        onnx.save(model, str(tmp))
        exported = OnnxModel(tmp)
        report = {"served": pipe.serving.served, **parity(exported, pipe, frame)}
        if not report["passed"]:
            raise ValueError(
                f"ONNX export disagrees with the Python pipeline: {report}; "
                f"{target_path} not written"
            )
        if target is not None and pipe.task == "classification" and target in frame.columns:
            report["accuracy"] = served_accuracy(exported, pipe, frame, target)
    torchscript(pipe, out_dir / TORCHSCRIPT_FILE)
    io.write_json(out_dir / SERVING_FILE, pipe.record())
    report["onnx_bytes"] = target_path.stat().st_size
    return report


__all__ = [
    "InputError", "OnnxModel", "Serving", "build_onnx", "export", "parity", "served_network",
    "torchscript",
]  # fmt: skip
