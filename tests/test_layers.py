"""The library's layers import one way: each module (or package: all of its files) only imports
tandem modules listed before it, and a package's files their own package."""

import ast
from pathlib import Path

import tandem

LAYERS = [
    "config", "io", "console", "data", "features", "models", "weights", "training", "estimators",
    "evaluation", "search", "inference", "export", "serve", "codedeps", "cli",
]  # fmt: skip


def test_layers_import_one_way():
    src = Path(tandem.__file__).parent
    packages = {p.parent.name for p in src.glob("*/__init__.py")}
    assert {p.stem for p in src.glob("*.py")} - {"__init__"} | packages == set(LAYERS)
    for position, name in enumerate(LAYERS):
        files = sorted((src / name).glob("*.py")) if name in packages else [src / f"{name}.py"]
        used = set()
        for node in (n for f in files for n in ast.walk(ast.parse(f.read_text("utf-8")))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "tandem":
                    used.update(alias.name for alias in node.names)
                elif node.module.startswith("tandem."):
                    used.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                used.update(
                    a.name.split(".")[1] for a in node.names if a.name.startswith("tandem.")
                )
        allowed = set(LAYERS[:position]) | {name}
        assert used <= allowed, f"tandem.{name} imports {sorted(used - allowed)} from a later layer"


def test_the_estimator_package_is_small_parts():
    """No class of tandem.estimators over 250 lines, no function over 60: each part (surface,
    building, loop, checkpoints, persistence, DDP) stays readable on its own."""
    sizes = {}
    for path in (Path(tandem.__file__).parent / "estimators").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                sizes[f"{path.name}:{node.name}"] = (node, node.end_lineno - node.lineno + 1)
    too_long = [f"{name} ({n} lines)" for name, (node, n) in sizes.items()
                if n > (250 if isinstance(node, ast.ClassDef) else 60)]  # fmt: skip
    assert not too_long, too_long
    assert "base.py:TorchEstimatorBase" in sizes and "loop.py:TrainingSteps" in sizes


def test_each_table_exists_once():
    """The schedules, the routed prefixes and signature reading each live in one place of src/."""
    text = {p: p.read_text(encoding="utf-8") for p in Path(tandem.__file__).parent.rglob("*.py")}

    def where(needle: str) -> list[str]:
        return sorted(p.name for p, t in text.items() if needle in t)

    assert where("OneCycleLR") == ["tables.py"]
    assert where("CosineAnnealingLR") == ["tables.py"]
    assert where("ROUTED_PREFIXES = ") == ["tables.py"]
    assert where("inspect.signature(") == ["models.py"]
