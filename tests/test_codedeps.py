"""`tandem check`'s code deps: every tandem/stages source file a stage imports (transitively, lazy
imports included) must be in that stage's dvc.yaml deps, or DVC misses a code change."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import yaml
from conftest import ROOT

from tandem.cli import STAGES
from tandem.codedeps import (
    ABSENT,
    _import_nodes,
    _imported,
    _module_file,
    code_dep_problems,
    dotted_value,
    stage_code,
    stage_command,
)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def mini_project(tmp_path: Path, files: dict[str, str], deps: list[str]) -> Path:
    """dvc.yaml with one stage ``split`` (``tandem split``), plus the given source files."""
    dvc = {"stages": {"split": {"cmd": "tandem split", "deps": deps, "outs": ["out.txt"]}}}
    base = {
        "stages/__init__.py": '"""Stages: a docstring only, so no dep."""\n',
        "src/tandem/__init__.py": '"""tandem."""\n__version__ = "0"\n',
    }
    return write(tmp_path, {**base, **files, "dvc.yaml": yaml.safe_dump(dvc)})


def test_the_real_dvc_yaml_lists_every_module_its_stages_import():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert code_dep_problems(ROOT, raw, STAGES) == []
    # these import gaps are seen by the analysis (and so must be declared)
    assert {"src/tandem/data.py", "src/tandem/io.py", "stages/layout.py"} <= set(
        stage_code(ROOT, "split")
    )
    assert {"src/tandem/evaluation.py", "src/tandem/data.py"} <= set(stage_code(ROOT, "baselines"))
    # tandem.estimators: a module (estimators.py) or a package (estimators/__init__.py)
    estimators = _module_file(ROOT, "tandem.estimators").relative_to(ROOT).as_posix()
    torch_code = {estimators, "src/tandem/models.py", "src/tandem/features.py"}
    for stage in ("evaluate", "export"):  # TorchClassifier comes from tandem.estimators
        assert torch_code <= set(stage_code(ROOT, stage))
    # tandem/__init__.py runs on every import of tandem: a dep; its lazy __getattr__ import of
    # estimators (torch) is not followed, so split does not depend on the estimator code
    assert "src/tandem/__init__.py" in stage_code(ROOT, "split")
    assert not [p for p in stage_code(ROOT, "split") if p.startswith("src/tandem/estimators")]
    assert "stages/__init__.py" not in stage_code(ROOT, "split")  # docstring only


def test_an_undeclared_module_is_named_with_its_stage(tmp_path):
    root = mini_project(
        tmp_path,
        {
            "stages/split.py": "from tandem import helper\n\ndef run(params, dataset=None): ...\n",
            "src/tandem/helper.py": "X = 1\n",
        },
        deps=["stages/split.py", "src/tandem/__init__.py"],
    )
    assert code_dep_problems(root, {}, STAGES) == [
        "stage split: imports src/tandem/helper.py (via stages/split.py) but dvc.yaml does not "
        "list it in deps"
    ]


def test_transitive_and_lazy_imports_are_followed(tmp_path):
    root = mini_project(
        tmp_path,
        {
            # a lazy import inside run(): stage -> a -> b (a relative import) -> c (import x.y)
            "stages/split.py": "def run(params, dataset=None):\n    from tandem.a import f\n",
            "src/tandem/a.py": "def f():\n    from . import b\n",
            "src/tandem/b.py": "import tandem.c\n",
            "src/tandem/c.py": "",
        },
        deps=["stages/split.py", "src/tandem/__init__.py", "src/tandem/a.py", "src/tandem/c.py"],
    )
    assert code_dep_problems(root, {}, STAGES) == [
        "stage split: imports src/tandem/b.py (via stages/split.py -> src/tandem/a.py) but "
        "dvc.yaml does not list it in deps"
    ]
    assert stage_code(root, "split")["src/tandem/c.py"] == [
        "stages/split.py", "src/tandem/a.py", "src/tandem/b.py"
    ]  # fmt: skip


def test_a_declared_directory_covers_its_files(tmp_path):
    files = {
        "stages/split.py": "from stages.helpers import g\nfrom tandem import helper\n",
        "stages/helpers.py": "def g(): ...\n",
        "src/tandem/helper.py": "",
    }
    for name, deps in (("a", ["stages", "src/tandem"]), ("b", ["./stages/", "src"])):
        assert code_dep_problems(mini_project(tmp_path / name, files, deps), {}, STAGES) == []
    problems = code_dep_problems(mini_project(tmp_path / "c", files, ["src/tandem"]), {}, STAGES)
    assert [p.split(" but ")[0] for p in problems] == [
        "stage split: runs stages/split.py",
        "stage split: imports stages/helpers.py (via stages/split.py)",
    ]


def test_type_checking_imports_are_skipped_and_init_names_resolved(tmp_path):
    root = mini_project(
        tmp_path,
        {
            "stages/split.py": """\
                from typing import TYPE_CHECKING

                from tandem import Estimator, __version__

                if TYPE_CHECKING:
                    from tandem import hints
            """,
            # like tandem/__init__.py: Estimator served lazily by __getattr__, named for type
            # checkers; the lazy import of `heavy` is not followed for other names
            "src/tandem/__init__.py": """\
                from typing import TYPE_CHECKING

                __version__ = "0.1"

                if TYPE_CHECKING:
                    from tandem.estimators import Estimator

                def __getattr__(name):
                    from tandem import estimators, heavy
                    return getattr(estimators, name)
            """,
            "src/tandem/estimators.py": "class Estimator: ...\n",
            "src/tandem/heavy.py": "",
            "src/tandem/hints.py": "",
        },
        deps=["stages/split.py"],
    )
    assert set(stage_code(root, "split")) == {
        "stages/split.py", "src/tandem/__init__.py", "src/tandem/estimators.py"
    }  # fmt: skip


def test_foreach_stages_are_expanded(tmp_path):
    root = write(
        tmp_path,
        {
            "stages/split.py": "from tandem import helper\n",
            "src/tandem/helper.py": "",
            "dvc.yaml": yaml.safe_dump(
                {
                    "stages": {
                        "tab-split": {
                            "foreach": "${sets}",
                            "do": {
                                "cmd": "tandem split --dataset ${key}",
                                "deps": ["stages/split.py", "data/${key}/raw.parquet"],
                            },
                        }
                    }
                }
            ),
        },
    )
    problems = code_dep_problems(root, {"sets": {"a": {}, "b": {}}}, STAGES)
    assert [p.split(":")[0] for p in problems] == ["stage tab-split@a", "stage tab-split@b"]
    assert all("src/tandem/helper.py" in p for p in problems)


def test_params_and_item_references_are_filled_in(tmp_path):
    """``${item.x}`` and ``${section.key}`` are read as DVC reads them, so a stage whose deps
    name its data set through them is checked against the right files."""
    root = write(
        tmp_path,
        {
            "stages/split.py": "from tandem import helper\n",
            "src/tandem/helper.py": "",
            "dvc.yaml": yaml.safe_dump(
                {
                    "stages": {
                        "split": {
                            "foreach": "${sets}",
                            "do": {
                                "cmd": "tandem split --dataset ${key}",
                                "deps": ["stages/split.py", "src/${item.code}/helper.py"],
                            },
                        },
                        "one": {"cmd": "tandem split --dataset ${pick.name}",
                                "deps": ["stages/split.py", "${pick.code}"]},
                    }
                }
            ),
        },
    )  # fmt: skip
    raw = {"sets": {"a": {"code": "tandem"}, "b": {"code": "elsewhere"}},
           "pick": {"name": "a", "code": "src/tandem"}}  # fmt: skip
    problems = code_dep_problems(root, raw, STAGES)
    assert [p.split(":")[0] for p in problems] == ["stage split@b"]


def test_only_tandem_stage_commands_are_analysed():
    assert stage_command({"cmd": "tandem train --dataset usps"}, STAGES) == ("train", "usps")
    assert stage_command({"cmd": "tandem summary"}, STAGES) == ("summary", None)
    for cmd in ("tandem check", "tandem show usps", "python stages/split.py", ""):
        assert stage_command({"cmd": cmd}, STAGES) is None


def test_dotted_value_tells_a_null_value_from_a_missing_key():
    raw = {"train": {"lr": 0.01, "schedule": None}, "seed": 0}
    assert dotted_value(raw, "train.lr") == 0.01
    assert dotted_value(raw, "train") == {"lr": 0.01, "schedule": None}
    assert dotted_value(raw, "train.schedule") is None  # present, null
    for missing in ("train.momentum", "seed.x", "nope"):
        assert dotted_value(raw, missing) is ABSENT


def test_the_runner_is_no_stage_dep():
    """The runner's modules (tandem.cli, tandem.codedeps) are no stage's dep: no stage imports
    them (so dvc.yaml need not list them), and codedeps does not import the CLI (one way)."""
    runner = {"src/tandem/cli.py", "src/tandem/codedeps.py"}
    for stage in STAGES:
        assert not runner & set(stage_code(ROOT, stage)), stage
    path = ROOT / "src" / "tandem" / "codedeps.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        module
        for node in _import_nodes(tree, into_functions=True)
        for module in _imported(ROOT, node, "tandem.codedeps", is_package=False)
    }
    assert "tandem.cli" not in imported
