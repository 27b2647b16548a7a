"""params.yaml validation, --set overrides, and dvc.yaml <-> stage modules agreement."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from conftest import ROOT

from tandem.cli import restrict, stage_params
from tandem.config import ParamsError, apply_overrides, load_params, parse_override


def test_project_params_validate():
    params = load_params(ROOT / "params.yaml")
    assert params.fetch.data_id == 41070
    assert params.split.method in ("random", "ordered")


def test_override_types_and_values():
    params = load_params(
        ROOT / "params.yaml",
        [
            "train.lr=0.01",
            "train.patience=null",
            "train.module_kwargs.dropout=0.5",
            "split.method=ordered",
        ],
    )
    assert params.train.lr == 0.01
    assert params.train.patience is None
    assert params.train.module_kwargs == {"dropout": 0.5}
    assert params.split.method == "ordered"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.no_such_key=1", "train.no_such_key"),
        ("nosection.x=1", "nosection"),
        ("train.lr=abc", "train.lr"),
        ("train.lr=-1", "train.lr"),
        ("split.method=shuffled", "split.method"),
        ("baselines.svc.C=0", "baselines.svc.C"),
        ("train.batch_size=2.5", "train.batch_size"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        load_params(ROOT / "params.yaml", [override])


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=1", ".lr=1"])
def test_malformed_override(text):
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        parse_override(text)


def test_missing_key_and_bad_file(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["train"]["lr"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.lr: missing"):
        load_params(path)
    path.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_apply_overrides_does_not_mutate():
    raw = {"train": {"lr": 1.0}}
    out = apply_overrides(raw, ["train.lr=2"])
    assert raw == {"train": {"lr": 1.0}} and out == {"train": {"lr": 2}}


def _dvc_stages() -> dict:
    """dvc.yaml's stages as (module name, dataset placeholder or None, stage body)."""
    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            assert stage["foreach"] == "${tabular.datasets}", name
            out[name] = (name.removeprefix("tabular-"), "${key}", stage["do"])
        else:
            out[name] = (name, None, stage)
    return out


def _module(name: str):
    sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"stages.{name}")


def test_every_stage_declares_exactly_the_params_it_reads():
    """dvc.yaml's params list of each stage is what the runner hands the stage, and each key
    exists in params.yaml (for every tabular data set)."""
    params = load_params(ROOT / "params.yaml")
    for name, (module_name, placeholder, stage) in _dvc_stages().items():
        module = _module(module_name)
        declared = tuple(stage.get("params", ()))
        if placeholder is None:
            assert declared == module.PARAMS, name
            assert stage["cmd"] == f"tandem {module_name}"
            restrict(params, module.PARAMS)  # raises if a declared key does not exist
        else:
            assert declared == tuple(k.replace("{name}", "${key}") for k in module.TABULAR_PARAMS)
            assert stage["cmd"] == f"tandem {module_name} --dataset ${{key}}"
            for dataset in params.tabular.datasets:
                restrict(params, stage_params(module, dataset))


def test_restricted_view_hides_undeclared_keys():
    params = load_params(ROOT / "params.yaml")
    view = restrict(params, ("split", "fetch.target"))
    assert view.fetch.target == "class"
    with pytest.raises(AttributeError):
        _ = view.fetch.data_id
    with pytest.raises(AttributeError):
        _ = view.train
    view = restrict(params, ("tabular.datasets.kr-vs-kp.task", "tabular.split"))
    assert view.tabular.datasets["kr-vs-kp"].task == "classification"
    with pytest.raises(AttributeError):
        _ = view.tabular.datasets["kr-vs-kp"].target
    with pytest.raises(KeyError):
        _ = view.tabular.datasets["adult"]


def test_stage_outputs_match_dvc_yaml():
    """Every path of the stage layout a stage writes is declared by dvc.yaml for that stage."""
    from stages.layout import USPS, tabular

    writes = {
        "fetch": ("raw", "provenance"),
        "split": ("train", "test"),
        "preprocess": ("preprocessor", "train_features", "test_features"),
        "train": ("model", "train_metrics"),
        "evaluate": ("eval_metrics",),
        "baselines": ("baselines_metrics",),
    }
    for name, (module_name, placeholder, stage) in _dvc_stages().items():
        if module_name not in writes:
            continue
        paths = USPS if placeholder is None else tabular(placeholder)
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(entry if isinstance(entry, str) else next(iter(entry)))
        for field in writes[module_name]:
            assert getattr(paths, field) in declared, (name, field)
        live = paths.live_dir + "/plots/metrics"
        assert (live in declared) == (module_name == "train"), name


def test_tabular_train_overrides_per_data_set():
    from tandem.config import tabular_train

    params = load_params(ROOT / "params.yaml", ["tabular.datasets.adult.train={max_epochs: 3}"])
    merged = tabular_train(params.tabular.train, params.tabular.datasets["adult"].train)
    assert merged.max_epochs == 3 and merged.lr == params.tabular.train.lr
    with pytest.raises(ParamsError) as info:
        load_params(ROOT / "params.yaml", ["tabular.datasets.adult.train={max_epoch: 3, lr: x}"])
    message = str(info.value)
    assert "tabular.datasets.adult.train.max_epoch: unknown key" in message
    assert "tabular.datasets.adult.train.lr:" in message
