"""params.yaml validation, --set overrides, and dvc.yaml <-> stage modules agreement."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from conftest import ROOT

from tandem.cli import restrict
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
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_declares_exactly_the_params_it_reads():
    """dvc.yaml's params list of each stage is the stage module's PARAMS, and each key exists."""
    sys.path.insert(0, str(ROOT))
    params = load_params(ROOT / "params.yaml")
    for name, stage in _dvc_stages().items():
        module = importlib.import_module(f"stages.{name}")
        assert tuple(stage.get("params", ())) == module.PARAMS, name
        view = restrict(params, module.PARAMS)  # raises if a declared key does not exist
        assert set(vars(view)) == {key.split(".")[0] for key in module.PARAMS}
        assert stage["cmd"] == f"tandem {name}"


def test_restricted_view_hides_undeclared_keys():
    params = load_params(ROOT / "params.yaml")
    view = restrict(params, ("split", "fetch.target"))
    assert view.fetch.target == "class"
    with pytest.raises(AttributeError):
        _ = view.fetch.data_id
    with pytest.raises(AttributeError):
        _ = view.train


def test_stage_outputs_match_dvc_yaml():
    """The paths a stage module writes are the outs/metrics/plots dvc.yaml declares."""
    sys.path.insert(0, str(ROOT))
    for name, stage in _dvc_stages().items():
        module = importlib.import_module(f"stages.{name}")
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(entry if isinstance(entry, str) else next(iter(entry)))
        written = {
            v for k, v in vars(module).items()
            if k.isupper() and isinstance(v, str) and "/" in v and k != "PARAMS"
        }  # fmt: skip
        written |= {v for k, v in vars(module).items() if k == "FIGURES" for v in v.values()}
        own = {p for p in written if any(p == d or p.startswith(d + "/") for d in declared)}
        deps = set(stage.get("deps", []))
        assert own | (written & deps) == written, (name, written - own - deps)
