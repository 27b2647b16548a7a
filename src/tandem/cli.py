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
}

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


def restrict(params: Any, keys: tuple[str, ...]) -> SimpleNamespace:
    """A view of ``params`` that holds only the declared keys (``section`` or ``section.key``)."""
    view: dict[str, Any] = {}
    for key in keys:
        section, _, field = key.partition(".")
        value = getattr(params, section)
        if not field:
            view[section] = value
        else:
            ns = view.setdefault(section, SimpleNamespace())
            setattr(ns, field, getattr(value, field))
    return SimpleNamespace(**view)


def load_stage(name: str, root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"stages.{name}")


def run_stage(name: str, params_file: Path, overrides: list[str]) -> None:
    """Validate params first (nothing is written on a bad key), then run the stage."""
    from tandem.console import console

    try:
        root = project_root()
        params_path = params_file if params_file.is_absolute() else Path.cwd() / params_file
        params = load_params(params_path, overrides)
    except (ParamsError, StageError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    import os

    os.chdir(root)  # stage paths are relative to the project root, as in dvc.yaml
    stage = load_stage(name, root)
    try:
        stage.run(restrict(params, stage.PARAMS))
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


def _add_stage_command(name: str, help_text: str) -> None:
    def command(params: ParamsOption = Path("params.yaml"), set_: SetOption = None) -> None:
        run_stage(name, params, set_ or [])

    command.__name__ = name
    app.command(name, help=help_text)(command)


for _name, _help in STAGES.items():
    _add_stage_command(_name, _help)


@app.command()
def check(params: ParamsOption = Path("params.yaml"), set_: SetOption = None) -> None:
    """Validate params.yaml (and overrides) without running anything."""
    try:
        load_params(params, set_ or [])
    except ParamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{params}: ok")


if __name__ == "__main__":  # pragma: no cover
    app()
