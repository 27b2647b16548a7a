"""The ``tandem`` command: one subcommand per DVC stage, run exactly as dvc.yaml runs it.

Each stage command loads params.yaml (``--params``), applies ``--set key=value`` overrides,
validates everything, and only then runs the stage module from the project's ``stages/`` folder,
handing it just the params keys the stage declares.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer

from tandem.config import ParamsError, load_params

STAGES = {
    "fetch": "Fetch the OpenML data set into data/raw (parquet + provenance JSON).",
    "split": "Split the raw data into train and test parquet files.",
    "preprocess": "Fit the preprocessor on train, transform train and test, persist it.",
    "train": "Train the torch classifier; log epochs with DVCLive; save the model.",
    "evaluate": "Evaluate the model on test: metrics, plot data and figures.",
    "baselines": "Fit the classical sklearn baselines on the same features.",
    "compare": "Compare the torch model with the baselines (table + chart).",
    "summary": "Summarise every tabular data set and model (table + chart).",
    "export": "Export preprocessor + network as one ONNX file (checked vs Python) + TorchScript.",
    "cv": "Cross-validate preprocessor + torch classifier on train (mean ± std per scorer).",
    "tune": "Hyperparameter search (grid | random | halving) with CV results, best params, plots.",
}
PER_DATASET = ("fetch", "split", "preprocess", "train", "evaluate", "baselines", "export")

app = typer.Typer(
    help="tandem: scikit-learn and PyTorch in tandem under DVC. Stage commands run what "
    "dvc.yaml runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class StageError(RuntimeError):
    pass


def project_root(start: Path | None = None) -> Path:
    """The nearest folder (from cwd upwards) holding dvc.yaml and stages/."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "stages").is_dir():
            return folder
    raise StageError(f"no tandem project (dvc.yaml + stages/) in {start} or above")


class View(SimpleNamespace):
    """Part of the params: attributes, and ``view[name]`` for mapping keys (data set names)."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


def restrict(params: Any, keys: tuple[str, ...]) -> View:
    """A view of ``params`` holding only the declared dotted keys (any depth), nothing else."""
    view = View()
    for key in keys:
        parts = key.split(".")
        value, node = params, view
        for depth, part in enumerate(parts):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
            if depth < len(parts) - 1:
                if not hasattr(node, part):
                    setattr(node, part, View())
                node = getattr(node, part)
            else:
                setattr(node, part, value)
    return view


def stage_params(stage: Any, dataset: str | None) -> tuple[str, ...]:
    """The params keys a stage declares: its PARAMS, or for a tabular data set TABULAR_PARAMS."""
    if dataset is None:
        return stage.PARAMS
    return tuple(key.replace("{name}", dataset) for key in stage.TABULAR_PARAMS)


def load_stage(name: str, root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"stages.{name}")


def run_stage(
    name: str, params_file: Path, overrides: list[str], dataset: str | None = None
) -> None:
    """Validate params first (nothing is written on a bad key), then run the stage."""
    from tandem.console import console

    try:
        root = project_root()
        params_path = params_file if params_file.is_absolute() else Path.cwd() / params_file
        params = load_params(params_path, overrides)
        if dataset is not None and dataset not in params.tabular.datasets:
            raise ParamsError(
                f"unknown data set {dataset!r}; "
                f"tabular.datasets has {list(params.tabular.datasets)}"
            )
    except (ParamsError, StageError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    import os

    os.chdir(root)  # stage paths are relative to the project root, as in dvc.yaml
    stage = load_stage(name, root)
    try:
        stage.run(restrict(params, stage_params(stage, dataset)), dataset)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        console.print(f"[red]error in stage {name}:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


ParamsOption = Annotated[
    Path, typer.Option("--params", help="params file (YAML), relative to the current directory")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a param: --set train.lr=0.003 (repeatable)"),
]


DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="run for this tabular data set (tabular.datasets.NAME)"),
]


def _add_stage_command(name: str, help_text: str) -> None:
    if name in PER_DATASET:

        def command(
            params: ParamsOption = Path("params.yaml"),
            set_: SetOption = None,
            dataset: DatasetOption = None,
        ) -> None:
            run_stage(name, params, set_ or [], dataset)

    else:

        def command(params: ParamsOption = Path("params.yaml"), set_: SetOption = None) -> None:
            run_stage(name, params, set_ or [])

    command.__name__ = name
    app.command(name, help=help_text)(command)


for _name, _help in STAGES.items():
    _add_stage_command(_name, _help)


def dvc_params_problems(root: Path, raw: dict) -> list[str]:
    """Where dvc.yaml and params.yaml disagree: a declared key that params.yaml lacks, or a stage
    whose module reads other keys than dvc.yaml declares (DVC would miss their changes)."""
    import shlex

    import yaml

    problems: list[str] = []
    stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages")
    for name, spec in (stages or {}).items():
        if "foreach" in spec:  # foreach: ${a.b} over a params mapping (or a literal list/dict)
            items = spec["foreach"]
            if isinstance(items, str):
                ref = items.strip().removeprefix("${").removesuffix("}")
                items = _lookup(raw, ref)
                if not isinstance(items, dict | list):
                    problems.append(
                        f"stage {name}: foreach {spec['foreach']} is not a params mapping"
                    )
                    continue
            keys = list(items)
            instances = [(f"{name}@{key}", spec["do"], str(key)) for key in keys]
        else:
            instances = [(name, spec, None)]
        for stage_name, body, key in instances:
            declared = []
            for entry in body.get("params", []):
                names = entry if isinstance(entry, str) else [
                    k for file, ks in entry.items() if file == "params.yaml" for k in ks
                ]  # fmt: skip
                for item in [names] if isinstance(names, str) else names:
                    item = item if key is None else item.replace("${key}", key)
                    declared.append(item)
                    if _lookup(raw, item) is _ABSENT:
                        problems.append(f"stage {stage_name}: params key {item!r} is not in params")
            words = shlex.split(body.get("cmd", "").replace("${key}", key or ""))
            if len(words) >= 2 and words[0] == "tandem" and words[1] in STAGES:
                module = load_stage(words[1], root)
                dataset = words[words.index("--dataset") + 1] if "--dataset" in words else None
                reads = list(stage_params(module, dataset))
                if sorted(reads) != sorted(declared):
                    problems.append(
                        f"stage {stage_name}: dvc.yaml declares params {sorted(declared)} but "
                        f"stages/{words[1]}.py reads {sorted(reads)}"
                    )
    return problems


_ABSENT = object()


def _lookup(raw: Any, dotted: str) -> Any:
    """The value at a dotted key of the raw params, or ``_ABSENT`` (a null value is present)."""
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


@app.command()
def check(params: ParamsOption = Path("params.yaml"), set_: SetOption = None) -> None:
    """Validate params.yaml (and overrides), and check that dvc.yaml declares exactly the params
    keys each stage reads, all of them present. Runs nothing."""
    import yaml

    try:
        load_params(params, set_ or [])
        root = project_root(params.resolve().parent)
        raw = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
        problems = dvc_params_problems(root, raw)
    except (ParamsError, StageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if problems:
        typer.echo(
            "error: dvc.yaml and params.yaml disagree:\n  " + "\n  ".join(problems), err=True
        )
        raise typer.Exit(2)
    typer.echo(f"{params}: ok; dvc.yaml's params all present and matching the stage modules")


ModelDirOption = Annotated[
    Path,
    typer.Option("--model-dir", help="models/ (USPS) or models/tabular/NAME (a tabular set)"),
]
BackendOption = Annotated[
    str, typer.Option("--backend", help="onnx (model.onnx in onnxruntime) or torch")
]


@app.command()
def predict(
    input: Annotated[Path, typer.Argument(help="CSV or parquet rows, a PNG, or a folder of PNGs")],
    model_dir: ModelDirOption = Path("models"),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="predictions file: .csv, .parquet or .json"),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="torch or onnx")] = "torch",
) -> None:
    """Predict labels and class probabilities for new data with the trained pipeline."""
    from tandem import inference

    try:
        if backend not in ("torch", "onnx"):
            raise inference.InputError(f"--backend must be torch or onnx; got {backend!r}")
        if output is not None:
            inference.check_output_path(output)
        result = inference.predict_file(input, model_dir, backend=backend)
    except (inference.InputError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if output is None:
        typer.echo(result.to_csv(index=False), nl=False)
    else:
        inference.write_predictions(result, output)
        typer.echo(f"{len(result)} predictions -> {output}", err=True)


@app.command()
def serve(
    model_dir: ModelDirOption = Path("models"),
    backend: BackendOption = "onnx",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    max_batch: Annotated[int, typer.Option(help="largest batch /predict accepts")] = 1024,
    threads: Annotated[int, typer.Option(help="inference threads (0: library default)")] = 0,
) -> None:
    """Serve the model over HTTP (FastAPI): /predict, /health, /metadata."""
    try:
        from tandem.serve import serve as run_server
    except ImportError as exc:
        typer.echo(f"error: {exc}; install the serve extra: pip install 'tandem[serve]'", err=True)
        raise typer.Exit(1) from None
    try:
        run_server(model_dir, backend=backend, host=host, port=port, max_batch=max_batch,
                   threads=threads)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":  # pragma: no cover
    app()
