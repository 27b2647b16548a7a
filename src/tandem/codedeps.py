"""Code deps: each stage in dvc.yaml lists as deps every tandem/stages source file it imports.

DVC reruns a stage only when one of its declared deps changes, so a stage whose module imports a
file of ``src/tandem`` or ``stages/`` that its deps leave out would not rerun when that code
changes, and its outputs would go stale unnoticed. ``tandem check`` runs this check
(``code_dep_problems``); it also uses this module's reading of dvc.yaml (its stages as DVC runs
them) for its params check. Only the runner (tandem.cli) imports this module, so it is no stage's
dep.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ---- dvc.yaml's stages as DVC runs them (shared with tandem.cli's params check) ----

ABSENT = object()


def dotted_value(raw: Any, dotted: str) -> Any:
    """The value at a dotted key of the raw params, or ``ABSENT`` (a null value is present)."""
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def _dvc_stages(root: Path) -> dict:
    import yaml

    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    return (yaml.safe_load(text) or {}).get("stages") or {}


def stage_instances(root: Path, raw: dict) -> tuple[list[tuple[str, dict, str | None]], list[str]]:
    """dvc.yaml's stages as DVC runs them: ``(name, body, key)``, a ``foreach`` stage expanded
    into one ``name@key`` per item (``key`` None for a plain stage), with every ``${...}`` of the
    body filled in as DVC fills it (``key``, ``item``, ``item.x`` and params keys); plus any
    problems."""
    instances: list[tuple[str, dict, str | None]] = []
    problems: list[str] = []
    for name, spec in _dvc_stages(root).items():
        if "foreach" in spec:  # foreach: ${a.b} over a params mapping (or a literal list/dict)
            items = spec["foreach"]
            if isinstance(items, str):
                ref = items.strip().removeprefix("${").removesuffix("}")
                items = dotted_value(raw, ref)
                if not isinstance(items, dict | list):
                    problems.append(
                        f"stage {name}: foreach {spec['foreach']} is not a params mapping"
                    )
                    continue
            pairs = items.items() if isinstance(items, dict) else ((i, i) for i in items)
            for key, item in pairs:
                context = {"key": str(key), "item": item}
                instances.append((f"{name}@{key}", _fill(spec["do"], raw, context), str(key)))
        else:
            instances.append((name, _fill(spec, raw, {}), None))
    return instances, problems


def _fill(node: Any, raw: dict, context: dict) -> Any:
    """``node`` with each ``${name}`` in its strings replaced (foreach context first, then params);
    a name found in neither is left as written."""
    import re

    if isinstance(node, dict):
        return {_fill(k, raw, context): _fill(v, raw, context) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, raw, context) for v in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match) -> str:
        head, _, rest = match.group(1).strip().partition(".")
        if head in context:
            found = context[head] if not rest else dotted_value(context[head], rest)
        else:
            found = dotted_value(raw, match.group(1).strip())
        return match.group(0) if found is ABSENT else str(found)

    return re.sub(r"\$\{([^}]+)\}", value, node)


def stage_command(body: dict, commands: Iterable[str]) -> tuple[str, str | None] | None:
    """``(stage, dataset)`` when the stage's cmd is ``tandem <stage> [--dataset NAME]``, ``<stage>``
    one of ``commands`` (the CLI's stage commands, tandem.cli.STAGES)."""
    import shlex

    words = shlex.split(body.get("cmd", ""))
    if len(words) >= 2 and words[0] == "tandem" and words[1] in commands:
        return words[1], words[words.index("--dataset") + 1] if "--dataset" in words else None
    return None


# ---- code deps: every tandem/stages source file a stage imports is one of its dvc.yaml deps ----
#
# Static (ast), so checking loads nothing. Every import statement counts, also one inside a
# function (a lazy import in run() still runs), except under ``if TYPE_CHECKING:``. Importing
# ``a.b`` also runs package ``a``'s __init__.py; a package __init__.py is a dep when it holds
# code (tandem's does: its __getattr__ serves TorchClassifier), not when it is only a docstring
# (stages' is).
# A package's own lazy imports (inside its functions, e.g. __getattr__) are not followed; instead
# ``from tandem import TorchClassifier`` resolves the name to the module that binds it in
# __init__.py (tandem.estimators). The runner (tandem.cli and what only it imports) is not a
# stage's dep: it validates params and hands the stage exactly its declared keys. Third-party
# libraries are out of scope: DVC does not track installed package versions.

CODE_PACKAGES = {"tandem": ("src", "tandem"), "stages": ("stages",)}


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a tandem/stages module under the project root, or None."""
    top, *rest = module.split(".")
    if top not in CODE_PACKAGES:
        return None
    base = root.joinpath(*CODE_PACKAGES[top], *rest)
    for candidate in (base.parent / f"{base.name}.py" if rest else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, into_functions: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run: all but those under ``if TYPE_CHECKING:``, and (for a
    package __init__) only those that run on import, not inside its functions."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if not into_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _parents(module: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs each package's __init__ first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _binding(root: Path, package: str, name: str) -> list[str]:
    """The module(s) that provide ``name`` in package ``package`` when it is not a submodule:
    none when its __init__.py defines it; where __init__.py imports it from (TYPE_CHECKING hints
    included); else, when the package has a module __getattr__, every module that one imports."""
    path = _module_file(root, package)
    if path is None or path.name != "__init__.py":
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # assigned or defined in __init__.py itself
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, package, is_package=True)
            for alias in node.names:
                if (alias.asname or alias.name) == name and source:
                    sub = f"{source}.{alias.name}"
                    return [sub if _module_file(root, sub) else source]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    return [alias.name]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            lazy = _import_nodes(node, into_functions=True)
            return [m for sub in lazy for m in _imported(root, sub, package, is_package=True)]
    return []


def _absolute(node: ast.ImportFrom, module: str, *, is_package: bool) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*parts, *([node.module] if node.module else [])])


def _imported(
    root: Path, node: ast.Import | ast.ImportFrom, module: str, *, is_package: bool
) -> list[str]:
    """The tandem/stages modules one import statement runs (packages' __init__ included)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        source = _absolute(node, module, is_package=is_package)
        if source.split(".")[0] not in CODE_PACKAGES:
            return []
        targets = [source]
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if alias.name == "*":
                continue
            if _module_file(root, sub) is not None:
                targets.append(sub)  # a submodule
            else:
                targets += _binding(root, source, alias.name)  # a name the package provides
    ours = [target for target in targets if target.split(".")[0] in CODE_PACKAGES]
    return [m for target in ours for m in _parents(target)]


def _has_code(path: Path) -> bool:
    """Whether a file holds anything but a docstring (an empty __init__.py changes nothing)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def stage_code(root: Path, stage: str) -> dict[str, list[str]]:
    """The tandem/stages source files ``stages/<stage>.py`` runs, transitively, each (a path
    relative to the project root) with the chain of files that imports it."""
    found: dict[str, list[str]] = {}
    pending = [(m, []) for m in _parents(f"stages.{stage}")]
    while pending:
        module, chain = pending.pop(0)
        path = _module_file(root, module)
        if path is None:
            continue
        rel = path.relative_to(root).as_posix()
        if rel in found:
            continue
        is_package = path.name == "__init__.py"
        found[rel] = chain
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes(tree, into_functions=not is_package):
            for target in _imported(root, node, module, is_package=is_package):
                pending.append((target, [*chain, rel]))
    return {
        rel: chain
        for rel, chain in found.items()
        if not rel.endswith("__init__.py") or _has_code(root / rel)
    }


def _covered(path: str, deps: list[str]) -> bool:
    """A file dep names the file; a directory dep (``src/tandem``) covers everything below it."""
    return any(dep in (".", path) or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def code_dep_problems(root: Path, raw: dict, commands: Iterable[str]) -> list[str]:
    """Each stage run as ``tandem <stage>`` (``<stage>`` one of ``commands``) whose dvc.yaml deps
    leave out a tandem/stages source file the stage imports (directly or through other modules):
    DVC would not rerun it when that code changes."""
    import posixpath

    instances, _ = stage_instances(root, raw)  # a bad foreach: cli.dvc_params_problems names it
    problems: list[str] = []
    cache: dict[str, dict[str, list[str]]] = {}
    for stage_name, body, _ in instances:
        command = stage_command(body, commands)
        if command is None:
            continue
        stage = command[0]
        if stage not in cache:
            cache[stage] = stage_code(root, stage)
        wdir = body.get("wdir", ".")
        deps = [
            posixpath.normpath(posixpath.join(wdir, str(dep))) for dep in body.get("deps") or []
        ]
        for rel, chain in cache[stage].items():
            if _covered(rel, deps):
                continue
            how = f"imports {rel} (via {' -> '.join(chain)})" if chain else f"runs {rel}"
            problems.append(f"stage {stage_name}: {how} but dvc.yaml does not list it in deps")
    return problems
