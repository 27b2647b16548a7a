"""params.yaml validation, --set overrides, and dvc.yaml <-> stage modules agreement."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
import yaml
from conftest import ROOT

from tandem.cli import restrict, stage_params
from tandem.config import ParamsError, apply_overrides, load_params, parse_override, validate


def test_project_params_validate():
    params = load_params(ROOT / "params.yaml")
    assert params.datasets["usps"].data.data_id == 41070
    assert params.datasets["usps"].data.image_shape == (16, 16)
    assert params.split.method in ("random", "ordered")


def test_override_types_and_values():
    params = load_params(
        ROOT / "params.yaml",
        [
            "train.lr=0.01",
            "train.patience=null",
            "train.module_kwargs.cnn={dropout: 0.5}",
            "split.method=ordered",
            "train.batch_size=auto",
        ],
    )
    assert params.train.lr == 0.01
    assert params.train.patience is None
    assert params.train.module_kwargs["cnn"] == {"dropout": 0.5}
    assert params.split.method == "ordered"
    assert params.train.batch_size == "auto"


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
        ("train.batch_size=0", "train.batch_size"),
        ("datasets.usps.data.source=ftp", "datasets.usps.data.source"),
        ("datasets.usps.train={lr: -1}", "datasets.usps.train.lr"),
        ("datasets.usps.split={method: shuffled}", "datasets.usps.split.method"),
        ("datasets.usps.data.image_shape=null", "modality image needs image_shape"),
        ("datasets.adult.data.source=file", "source file needs path"),
        (
            "datasets.adult.data={source: file, path: other/a.csv, target: y, task: regression}",
            "must lie under data/sources/file/",
        ),
        ("datasets.adult.data.path=data/sources/file/../../a.csv", "must lie under"),
        (
            "datasets.new={data: {source: sklearn, name: load_wine, target: t, task: regression}}",
            "datasets.new.split: missing (write split: {} when the entry overrides nothing)",
        ),
        (
            "datasets.tune={data: {source: sklearn, name: load_wine, target: t, task: regression}, "
            "split: {}, preprocess: {}, train: {}, evaluate: {}, baselines: {}}",
            "datasets.tune: a name of letters",
        ),
        ("train.augment={rotate: 10}", "datasets.adult.train.augment: augmentation is for image"),
        ("datasets.usps.preprocess={pca: 20}", "datasets.usps.preprocess.pca"),
        # shifting per-pixel z-scores is not shifting the image
        (
            "datasets.usps.preprocess.scaler=standard",
            "datasets.usps.train.augment: augmentation "
            "and test-time augmentation move pixels, but preprocess.scaler 'standard'",
        ),
        ("cv.dataset=nope", "cv.dataset"),
        ("split.n_train=7291", "n_train=7291 does nothing with method random"),
        ("tune.n_iter=8", "tune: n_iter does nothing with method grid"),
        ("tune.halving={factor: 2}", "tune: halving does nothing with method grid"),
        ("tune.method=random", "tune: method random draws n_iter candidates: set n_iter"),
        ("datasets.usps.split={n_train: 7291}", "datasets.usps.split: n_train=7291 does nothing"),
        ("tune.dataset=cpu", "tune.dataset: 'cpu' is not a classification entry"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ParamsError, match=re.escape(named)):
        load_params(ROOT / "params.yaml", [override])


def test_tta_on_scaled_pixels_is_refused():
    overrides = ["datasets.usps.train.augment=null", "datasets.usps.preprocess.scaler=minmax"]
    with pytest.raises(ParamsError, match=re.escape("datasets.usps.evaluate.tta: augmentation")):
        load_params(ROOT / "params.yaml", overrides)
    load_params(ROOT / "params.yaml", overrides[:1])  # raw pixels: TTA shifts the image


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
        if "foreach" in stage:  # the registry's entries, or a list of their names
            assert stage["foreach"] in ("${datasets}", "${ensemble.datasets}"), name
            placeholder = "${key}" if stage["foreach"] == "${datasets}" else "${item}"
            out[name] = (name, placeholder, stage["do"])
        else:
            out[name] = (name, None, stage)
    return out


def _module(name: str):
    sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"stages.{name}")


def test_every_per_entry_stage_runs_over_the_registry():
    """The chain runs once per entry of datasets; no stage is written for one data set."""
    stages = _dvc_stages()
    per_entry = {name for name, (_, placeholder, _) in stages.items() if placeholder == "${key}"}
    assert per_entry == {"resolve", "fetch", "split", "preprocess", "train", "evaluate", "export",
                         "baselines"}  # fmt: skip
    for name in per_entry:
        assert stages[name][2]["cmd"] == f"tandem {name} --dataset ${{key}}"
    assert stages["ensemble"][2]["cmd"] == "tandem ensemble --dataset ${item}"  # listed entries
    assert not any("usps" in str(body) for _, _, body in stages.values())


def test_every_stage_declares_exactly_the_params_it_reads():
    """dvc.yaml's params of each stage are what the runner hands the stage (a recipe file,
    recipes/NAME/SECTION.yaml, standing for the shared SECTION with datasets.NAME.SECTION merged
    over it), and each key exists in params.yaml (for every entry of the registry)."""
    from tandem.cli import dvc_params_problems

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert dvc_params_problems(ROOT, raw) == []
    params = load_params(ROOT / "params.yaml")
    for name, (module_name, placeholder, _) in _dvc_stages().items():
        module = _module(module_name)
        for dataset in params.datasets if placeholder or name in ("cv", "tune") else [None]:
            restrict(params, stage_params(module, dataset))  # raises if a key does not exist
    recipes = [p for _, _, stage in _dvc_stages().values() for p in stage.get("params", ())
               if isinstance(p, dict)]  # fmt: skip
    assert recipes and all(f.startswith("recipes/") for p in recipes for f in p)


def test_restricted_view_hides_undeclared_keys():
    params = load_params(ROOT / "params.yaml")
    view = restrict(params, ("split", "datasets.kr-vs-kp.data"))
    assert view.datasets["kr-vs-kp"].data.task == "classification"
    with pytest.raises(AttributeError):
        _ = view.datasets["kr-vs-kp"].train
    with pytest.raises(AttributeError):
        _ = view.train
    with pytest.raises(KeyError):
        _ = view.datasets["adult"]
    view = restrict(params, ("split.seed",))
    with pytest.raises(AttributeError):
        _ = view.datasets


def test_stage_outputs_match_dvc_yaml():
    """Every path of the layout a stage writes is declared by dvc.yaml for that stage."""
    from stages.layout import layout

    writes = {
        "fetch": ("raw", "provenance"),
        "split": ("train", "test"),
        "preprocess": ("preprocessor", "train_features", "test_features"),
        "train": ("model", "metrics:train"),
        "evaluate": (
            "metrics:eval",
            "plot:predictions",
            "plot:curves",
            "plot:learning",
            "plot:validation",
        ),  # fmt: skip
        "baselines": ("metrics:baselines",),
        "export": ("metrics:export",),
        "ensemble": ("ensemble", "metrics:ensemble"),
    }
    for name, (module_name, placeholder, stage) in _dvc_stages().items():
        if module_name not in writes:
            continue
        paths = layout(placeholder)
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(entry if isinstance(entry, str) else next(iter(entry)))
        for field in writes[module_name]:
            kind, _, arg = field.partition(":")
            path = getattr(paths, kind)(arg) if arg else getattr(paths, kind)
            assert path in declared, (name, field)
        assert (paths.live_dir in declared) == (module_name == "train"), name  # DVCLive's logs


def test_entry_overrides_merge_over_the_shared_sections():
    from tandem.config import resolve

    params = load_params(
        ROOT / "params.yaml",
        ["datasets.adult.train={max_epochs: 3, module_kwargs: {mlp: {dropout: 0.3}}}"],
    )
    merged = resolve(params.train, params.datasets["adult"], "train")
    assert merged.max_epochs == 3 and merged.lr == params.train.lr
    # nested mappings merge key by key: the shared hidden sizes stay
    assert merged.module_kwargs["mlp"] == {"hidden_sizes": [256, 128], "dropout": 0.3}
    # an entry with no override of a section gets the shared one itself
    assert resolve(params.train, params.datasets["titanic"], "train") is params.train
    with pytest.raises(ParamsError) as info:
        load_params(ROOT / "params.yaml", ["datasets.adult.train={max_epoch: 3, lr: x}"])
    message = str(info.value)
    assert "datasets.adult.train.max_epoch: unknown key" in message
    assert "datasets.adult.train.lr:" in message


def test_label_names_belong_to_a_classification_entry():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["cpu"]["label_names"] = {"1": "one"}
    with pytest.raises(ParamsError, match="datasets.cpu.label_names: a regression entry"):
        validate(raw)
    raw["datasets"]["cpu"].pop("label_names")
    raw["evaluate"]["label_names"] = {"1": "one"}  # the shared evaluate section has none
    with pytest.raises(ParamsError, match="evaluate.label_names: unknown key"):
        validate(raw)


def test_a_recipe_holds_what_reaches_the_entry_and_nothing_else():
    """config.recipe: the shared section merged with the entry's own keys; another modality's or
    task's keys null; module_kwargs of the trained module only. The stage reads what the file
    holds: a key not declared is an error, a key that does not reach the entry reads None."""
    from tandem.cli import restrict
    from tandem.config import recipe

    params = load_params(ROOT / "params.yaml", ["train.module_kwargs.cnn={dropout: 0.3}"])
    usps = recipe(params, "usps", "train")
    assert usps.lr == 0.008 and usps.augment.rotate == 10  # its own, typed
    assert set(usps.as_dict()["module_kwargs"]) == {"cnn"}
    assert usps.module_kwargs["cnn"]["channels"] == [24, 48, 96]  # merged with the shared one
    adult = recipe(params, "adult", "train")
    assert adult.as_dict()["module_kwargs"] == {"mlp": {"hidden_sizes": [256, 128], "dropout": 0.1}}
    assert adult.augment is None and recipe(params, "cpu", "train").label_smoothing is None
    assert recipe(params, "adult", "evaluate").as_dict() == {"n_worst": None, "tta": None}
    assert recipe(params, "adult", "preprocess").pca is None
    assert recipe(params, "usps", "preprocess").n_bins is None
    assert recipe(params, "adult", "baselines").svc is None
    assert recipe(params, "usps", "baselines").svc.C == 10.0
    # a stage that declares some keys (export: tta and the entry's label names) sees those alone
    view = restrict(params, ("evaluate.tta", "datasets.usps.data", "datasets.usps.evaluate",
                             "datasets.usps.label_names"))  # fmt: skip
    served = recipe(view, "usps", "evaluate")
    assert served.tta is True and view.datasets.usps.label_names["10"] == "9"
    with pytest.raises(AttributeError, match="not declared"):
        _ = served.n_worst
    assert usps.model_copy(update={"seed": 3}).seed == 3  # the ensemble's members


def test_init_weights_is_a_safetensors_source_and_its_hash_is_in_the_recipe(tmp_path, monkeypatch):
    from tandem.config import recipe

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for bad in ("models/usps/model/weights.safetensors", "data/sources/weights/usps.pt",
                "data/sources/weights/../../x.safetensors"):  # fmt: skip
        raw["datasets"]["usps"]["train"]["init_weights"] = bad
        with pytest.raises(ParamsError, match="must be a .safetensors file under data/sources"):
            validate(raw)
    raw["datasets"]["usps"]["train"] |= {"init_weights": "data/sources/weights/u.safetensors",
                                         "freeze": ["1", "2"]}  # fmt: skip
    params = validate(raw)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError, match="train.init_weights: cannot read"):
        recipe(params, "usps", "train")
    (tmp_path / "data/sources/weights").mkdir(parents=True)
    (tmp_path / "data/sources/weights/u.safetensors").write_bytes(b"one")
    first = recipe(params, "usps", "train").as_dict()
    (tmp_path / "data/sources/weights/u.safetensors").write_bytes(b"two")
    assert recipe(params, "usps", "train").init_weights_sha256 != first["init_weights_sha256"]
    assert first["freeze"] == ["1", "2"] and "init_weights_sha256" not in recipe(
        params, "adult", "train").as_dict()  # fmt: skip


def test_params_yaml_has_no_duplicate_keys():
    """PyYAML keeps the last of two equal keys silently; DVC's reader refuses the file."""
    from ruamel.yaml import YAML

    YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())
    with pytest.raises(Exception, match="duplicate key"):
        YAML(typ="safe", pure=True).load("train:\n  a: 1\n  a: 2\n")
