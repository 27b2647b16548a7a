"""The `tandem` CLI: params refused before anything is written; a stage run alone."""

from __future__ import annotations

import subprocess

import yaml
from conftest import ROOT, tool_env, usps_like


def tandem(args, cwd):
    return subprocess.run(
        ["tandem", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300
    )


def test_unknown_key_is_refused_by_name_and_nothing_is_written(project):
    proc = tandem(["train", "--dataset", "usps", "--set", "train.no_such_key=1"], project)
    assert proc.returncode != 0
    assert "train.no_such_key" in proc.stderr
    assert not (project / "models").exists() and not (project / "metrics").exists()
    proc = tandem(["split", "--dataset", "usps", "--set", "split.test_size=2"], project)
    assert proc.returncode != 0 and "split.test_size" in proc.stderr


def test_a_per_entry_stage_needs_a_known_data_set(project):
    proc = tandem(["split"], project)
    assert proc.returncode == 2
    assert "give --dataset NAME, one of ['usps', 'adult'" in proc.stderr
    proc = tandem(["split", "--dataset", "uspss"], project)
    assert proc.returncode == 2 and "unknown data set 'uspss'" in proc.stderr
    proc = tandem(["cv", "--dataset", "cpu"], project)
    assert proc.returncode == 2 and "'cpu' is a regression entry" in proc.stderr
    # the ensemble stage runs for the entries DVC runs it for, and writes nothing for another
    proc = tandem(["ensemble", "--dataset", "adult"], project)
    assert proc.returncode == 2
    assert "ensemble.datasets ['usps']; add 'adult' there" in proc.stderr
    assert not (project / "models").exists() and not (project / "metrics").exists()


def test_missing_input_is_named(project):
    proc = tandem(["split", "--dataset", "usps"], project)
    assert proc.returncode == 1
    assert "data/usps/raw.parquet" in proc.stderr


def test_a_shared_key_the_entry_overrides_is_named(project):
    # USPS's entry sets its own max_epochs: the shared one does not reach it, and the CLI says so
    # (the stage then stops on its missing input, as without the note)
    proc = tandem(["train", "--dataset", "usps", "--set", "train.max_epochs=2",
                   "--set", "train.weight_decay=0.01"], project)  # fmt: skip
    assert proc.returncode == 1
    assert "--set train.max_epochs does not reach 'usps'" in proc.stderr
    own = yaml.safe_load((project / "params.yaml").read_text())["datasets"]["usps"]["train"]
    assert f"datasets.usps.train.max_epochs ({own['max_epochs']}) wins" in proc.stderr
    assert "weight_decay" not in proc.stderr  # the entry keeps the shared weight decay
    proc = tandem(["train", "--dataset", "adult", "--set", "train.max_epochs=2"], project)
    assert proc.returncode == 1 and "does not reach" not in proc.stderr


def test_train_stage_alone_on_small_features(project):
    usps_like(120, at=(project / "data/usps/features_train.parquet",))
    proc = tandem(
        ["train", "--dataset", "usps", "--set", "train.module=mlp",
         "--set", "datasets.usps.train.max_epochs=2", "--set", "train.min_steps=0",
         "--set", "train.lr_schedule=null"],
        project,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for path in (
        "models/usps/model/config.json",
        "models/usps/model/weights.safetensors",
        "metrics/usps/train.json",
        "dvclive/usps/metrics.json",
        "dvclive/usps/plots/metrics/train_loss.tsv",
    ):
        assert (project / path).is_file(), path  # fmt: skip
    rows = (project / "dvclive/usps/plots/metrics/train_loss.tsv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch


def test_check_command(project):
    ok = tandem(["check"], project)
    assert ok.returncode == 0 and "note:" not in ok.stderr  # every entry's model is an artifact
    bad = tandem(["check", "--set", "train.optimizer=adamx"], project)
    assert bad.returncode == 2 and "train.optimizer" in bad.stderr


def test_check_notes_models_missing_from_the_registry(project):
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["wine"] = {
        "data": {"source": "sklearn", "name": "load_wine", "target": "target",
                 "task": "classification"},
        **{k: {} for k in ("split", "preprocess", "train", "evaluate", "baselines")},
    }  # fmt: skip
    del params["datasets"]["adult"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = tandem(["check"], project)
    assert proc.returncode == 0, proc.stderr  # notes, not errors: the pipeline runs either way
    assert "note: datasets.wine: its model models/wine/model is not in dvc.yaml's artifacts" in (
        proc.stderr
    )
    assert "note: artifact adult-model: models/adult/model is no registry entry's model" in (
        proc.stderr
    )


def test_check_finds_dvc_yaml_and_params_disagreeing(project):
    import yaml

    dvc = yaml.safe_load((project / "dvc.yaml").read_text())
    dvc["stages"]["cv"]["params"].append("cv.no_such_key")  # declared, not in params.yaml
    dvc["stages"]["evaluate"]["do"]["params"].pop()  # its recipe file: read, not declared
    dvc["stages"]["train"]["do"]["params"].append("datasets.${key}.nope")
    (project / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    proc = tandem(["check"], project)
    assert proc.returncode == 2
    assert "stage cv: params key 'cv.no_such_key' is not in params" in proc.stderr
    assert "stage evaluate@usps: dvc.yaml declares params" in proc.stderr
    assert "stages/evaluate.py reads" in proc.stderr
    for name in ("usps", "cpu"):  # foreach is expanded over datasets
        assert f"'datasets.{name}.nope' is not in params" in proc.stderr


def test_check_names_a_module_a_stage_imports_but_dvc_yaml_does_not_list(tmp_path):
    import shutil

    from conftest import ROOT

    root = tmp_path / "mini"
    (root / "stages").mkdir(parents=True)
    (root / "src" / "tandem").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "stages" / "__init__.py").write_text("")
    (root / "stages" / "split.py").write_text(
        'PARAMS = ("split",)\n\n\ndef run(params, dataset=None):\n    from tandem import helper\n'
    )  # a lazy import: the stage module itself loads fine
    (root / "src" / "tandem" / "helper.py").write_text("")
    (root / "dvc.yaml").write_text(
        "stages:\n  split:\n    cmd: tandem split\n    deps:\n      - stages/split.py\n"
        "    params:\n      - split\n"
    )
    proc = tandem(["check"], root)
    assert proc.returncode == 2, proc.stderr
    assert (
        "stage split: imports src/tandem/helper.py (via stages/split.py) but dvc.yaml does not "
        "list it in deps" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


# ---- failures inside a stage: a line or two naming the stage, no traceback ----


def run_failing_stage(project, monkeypatch, exc, args=("split", "--dataset", "usps")):
    """Run ``tandem <args>`` in-process with the stage's run() raising ``exc``."""
    import re
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from tandem import cli

    def run(params, dataset=None):
        raise exc

    fake = SimpleNamespace(PARAMS=("split",), run=run)
    monkeypatch.setattr(cli, "load_stage", lambda name, root: fake)
    monkeypatch.chdir(project)
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    result = CliRunner().invoke(cli.app, list(args))
    return result, re.sub(r"\x1b\[[0-9;]*m", "", result.output)


def test_key_error_in_a_stage_is_one_message_naming_the_stage(project, monkeypatch):
    result, output = run_failing_stage(project, monkeypatch, KeyError("foo"))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # reported, not escaped
    assert "error in stage split (data set usps): KeyError: 'foo'" in output
    assert "test_cli.py:" in output  # where it was raised
    assert "TANDEM_DEBUG=1" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 2


def test_attribute_error_in_a_stage_is_reported(project, monkeypatch):
    result, output = run_failing_stage(project, monkeypatch, AttributeError())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error in stage split (data set usps): AttributeError" in output
    assert "TANDEM_DEBUG=1" in output
    assert "Traceback" not in output


def test_cuda_out_of_memory_suggests_a_smaller_batch_or_the_cpu(project, monkeypatch):
    import torch

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    result, output = run_failing_stage(project, monkeypatch, oom, ("train", "--dataset", "cpu"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error in stage train (data set cpu): ran out of GPU memory" in output
    assert "Tried to allocate 2.00 GiB" in output
    assert "--set train.batch_size=32" in output and "--set train.device=cpu" in output
    assert "Traceback" not in output


def test_expected_errors_keep_their_message_and_interrupts_exit_130(project, monkeypatch):
    result, output = run_failing_stage(project, monkeypatch, ValueError("column 'x' is missing"))
    assert result.exit_code == 1
    assert "error in stage split (data set usps): column 'x' is missing" in output
    assert "TANDEM_DEBUG" not in output  # the message says it all
    result, _ = run_failing_stage(project, monkeypatch, KeyboardInterrupt())
    assert result.exit_code == 130


def test_a_type_error_is_a_bug_not_a_user_error(project, monkeypatch, tmp_path):
    """A TypeError comes from code, not from the user's input: reported as unexpected, with its
    type and where it was raised, in a stage and in predict alike."""
    bug = TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    result, output = run_failing_stage(project, monkeypatch, bug)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error in stage split (data set usps): TypeError: unsupported operand" in output
    assert "test_cli.py:" in output and "unexpected" in output and "TANDEM_DEBUG=1" in output

    from typer.testing import CliRunner

    from tandem import cli, inference

    def broken(*args, **kwargs):
        raise TypeError("predict_file() got an unexpected keyword argument 'tta'")

    monkeypatch.setattr(inference, "predict_file", broken)
    result = CliRunner().invoke(
        cli.app, ["predict", str(tmp_path / "rows.csv"), "--model-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error in predict: TypeError: predict_file() got an unexpected" in result.output
    assert "unexpected; run again with TANDEM_DEBUG=1" in result.output


def test_predict_reports_unexpected_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tandem import cli, inference

    def broken(*args, **kwargs):
        raise KeyError("n_features")

    monkeypatch.setattr(inference, "predict_file", broken)
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    result = CliRunner().invoke(
        cli.app, ["predict", str(tmp_path / "rows.csv"), "--model-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error in predict: KeyError: 'n_features'" in result.output
    assert "Traceback" not in result.output


def test_a_stage_error_has_no_traceback_unless_tandem_debug(project):
    """The real command in a subprocess: a one-line report, or with TANDEM_DEBUG=1 the traceback."""
    (project / "stages" / "split.py").write_text(
        'PARAMS = ("split",)\n\n\ndef run(params, dataset=None):\n    {}["foo"]\n'
    )
    proc = tandem(["split", "--dataset", "usps"], project)
    assert proc.returncode == 1
    assert "error in stage split (data set usps): KeyError: 'foo' (at stages/split.py:5)" in (
        proc.stderr.replace("\n", " ")
    )
    assert "Traceback" not in proc.stderr
    debug = subprocess.run(
        ["tandem", "split", "--dataset", "usps"], cwd=project, env=tool_env(TANDEM_DEBUG="1"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "KeyError: 'foo'" in debug.stderr


def test_the_cli_does_not_load_torch_to_handle_errors():
    import sys

    code = "import sys, tandem.cli; assert 'torch' not in sys.modules, 'torch loaded'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_predict_needs_a_data_set_or_a_model_directory(tmp_path):
    from typer.testing import CliRunner

    from tandem import cli

    result = CliRunner().invoke(cli.app, ["predict", str(tmp_path / "rows.csv")])
    assert result.exit_code == 2 and "--dataset NAME" in result.output


def test_show_prints_an_entrys_effective_settings_and_marks_its_own():
    """`tandem show NAME`: the shared sections merged with the entry's overrides, the winner of
    each key visible in one place (USPS's own lr wins over a shared --set)."""
    import yaml
    from typer.testing import CliRunner

    from tandem.cli import app

    result = CliRunner().invoke(app, ["show", "usps", "--params", str(ROOT / "params.yaml"),
                                      "--set", "train.lr=0.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["train"]["lr"] == 0.008 and "lr: 0.008   # own" in result.output
    assert shown["train"]["weight_decay"] == 0.0001  # a shared key the entry keeps
    adult = yaml.safe_load(CliRunner().invoke(
        app, ["show", "adult", "--params", str(ROOT / "params.yaml"), "--set", "train.lr=0.5"]
    ).output)  # fmt: skip
    assert adult["train"]["lr"] == 0.5 and adult["data"]["data_id"] == 1590
    missing = CliRunner().invoke(app, ["show", "nope", "--params", str(ROOT / "params.yaml")])
    assert missing.exit_code == 2 and "'nope' is not in datasets" in missing.output


def test_serve_takes_its_limits_from_flags(monkeypatch, tmp_path):
    """`tandem serve` hands the body-size, pixel and batch limits to the server (docs/serving.md
    lists them); the defaults are the server's."""
    from typer.testing import CliRunner

    from tandem import serve
    from tandem.cli import app

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda model_dir, **kw: seen.update(kw))
    args = ["serve", "--model-dir", str(tmp_path), "--max-body-mb", "2", "--max-image-pixels",
            "1000", "--max-batch", "8"]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (seen["max_body_mb"], seen["max_image_pixels"], seen["max_batch"]) == (2.0, 1000, 8)
    assert CliRunner().invoke(app, args[:3]).exit_code == 0
    assert seen["max_batch"] == serve.DEFAULT_MAX_BATCH
    assert seen["max_body_mb"] == serve.DEFAULT_MAX_BODY_MB
    assert seen["max_image_pixels"] == serve.DEFAULT_MAX_IMAGE_PIXELS


def test_weights_writes_an_entrys_network_for_another_to_start_from(tmp_path, monkeypatch):
    import numpy as np
    from safetensors import safe_open
    from typer.testing import CliRunner

    from tandem import TorchClassifier, cli

    X = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
    TorchClassifier(max_epochs=1, random_state=0).fit(X, X[:, 0] > 0).save(
        tmp_path / "models/toy/model"
    )
    monkeypatch.chdir(tmp_path)
    out = "data/sources/weights/toy.safetensors"
    result = CliRunner().invoke(cli.app, ["weights", "--dataset", "toy", "-o", out])
    assert result.exit_code == 0, result.output
    assert "tensors of mlp ->" in result.output
    with safe_open(out, framework="pt") as f:
        assert f.metadata()["tandem.module"] == "mlp"
    bad = CliRunner().invoke(cli.app, ["weights", "--dataset", "toy", "-o", "toy.pt"])
    assert bad.exit_code == 1 and "must end in .safetensors" in bad.output
    missing = CliRunner().invoke(cli.app, ["weights", "--dataset", "nope", "-o", out])
    assert missing.exit_code == 1 and "missing" in missing.output
