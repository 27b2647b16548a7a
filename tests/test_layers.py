"""The library's layers import one way: each module only imports tandem modules listed before it."""

import ast
from pathlib import Path

import tandem

LAYERS = [
    "config", "io", "console", "data", "features", "models", "training", "estimators",
    "evaluation", "search", "inference", "export", "serve", "cli",
]  # fmt: skip


def test_layers_import_one_way():
    src = Path(tandem.__file__).parent
    assert {p.stem for p in src.glob("*.py")} - {"__init__"} == set(LAYERS)
    for position, name in enumerate(LAYERS):
        tree = ast.parse((src / f"{name}.py").read_text(encoding="utf-8"))
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "tandem":
                    used.update(alias.name for alias in node.names)
                elif node.module.startswith("tandem."):
                    used.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                used.update(
                    a.name.split(".")[1] for a in node.names if a.name.startswith("tandem.")
                )
        allowed = set(LAYERS[:position])
        assert used <= allowed, f"tandem.{name} imports {sorted(used - allowed)} from a later layer"
