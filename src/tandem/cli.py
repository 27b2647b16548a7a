"""The ``tandem`` command: one subcommand per DVC stage, run exactly as dvc.yaml runs it.

Each stage command loads params.yaml (``--params``), applies ``--set key=value`` overrides,
validates everything, and only then runs the stage module from the project's ``stages/`` folder,
handing it just the params keys the stage declares.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, NoReturn

import typer

from tandem import io
from tandem.codedeps import ABSENT, code_dep_problems, dotted_value, stage_command, stage_instances
from tandem.config import ParamsError, load_params, shadowed

STAGES = {
    "resolve": "Write each section as it reaches an entry to recipes/NAME/SECTION.yaml.",
    "fetch": "Read a data set's source into data/NAME (parquet + provenance JSON).",
    "split": "Split the raw data into train and test parquet files.",
    "preprocess": "Fit the preprocessor on train, transform train and test, persist it.",
    "train": "Train the torch model; log epochs with DVCLive; save the model.",
    "evaluate": "Evaluate the model on test: metrics, plot data and figures.",
    "baselines": "Fit the classical sklearn baselines on the same features.",
    "export": "Export preprocessor + network as one ONNX file (checked vs Python) + TorchScript.",
    "cv": "Cross-validate preprocessor + torch classifier on train (mean ± std per scorer).",
    "tune": "Hyperparameter search (grid | random | halving) with CV results, best params, plots.",
    "ensemble": "Train more seeds of a model; score their averaged probabilities on test.",
    "summary": "Every data set and model in one table and chart (reports/summary.*).",
}
# stages that run once per entry of params.yaml's datasets (--dataset NAME); cv and tune run on
# the entry their section names (cv.dataset, tune.dataset) unless --dataset says another
PER_DATASET = (
    "resolve", "fetch", "split", "preprocess", "train", "evaluate", "baselines", "export",
    "ensemble",
)  # fmt: skip
SEARCH_STAGES = ("cv", "tune")

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
    """The params keys a stage declares: its PARAMS, ``{name}`` filled with the data set."""
    return tuple(key.replace("{name}", dataset or "") for key in stage.PARAMS)


def stage_dataset(name: str, params: Any, dataset: str | None) -> str | None:
    """The entry of ``datasets`` a stage runs for, checked: named by --dataset, or for cv/tune
    by their section; stages over the whole registry take none."""
    if name in SEARCH_STAGES and dataset is None:
        dataset = getattr(params, name).dataset
    if name not in PER_DATASET and name not in SEARCH_STAGES:
        return None  # summary: over every entry (its command has no --dataset option)
    if dataset is None:
        raise ParamsError(
            f"stage {name} runs once per data set: give --dataset NAME, one of "
            f"{list(params.datasets)}"
        )
    if dataset not in params.datasets:
        raise ParamsError(f"unknown data set {dataset!r}; datasets has {list(params.datasets)}")
    if name in SEARCH_STAGES and params.datasets[dataset].data.task != "classification":
        raise ParamsError(f"stage {name} searches classifiers; {dataset!r} is a regression entry")
    if name == "ensemble" and dataset not in params.ensemble.datasets:  # DVC tracks only those
        raise ParamsError(
            f"stage ensemble runs for the entries of ensemble.datasets {params.ensemble.datasets}"
            f"; add {dataset!r} there (--set 'ensemble.datasets=[{dataset}]')"
        )
    return dataset


def load_stage(name: str, root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"stages.{name}")


# ---- failures: one or two lines naming the stage, never a traceback (TANDEM_DEBUG=1 shows it) ----

# user errors, whose message says it all: bad input and params (ValueError: tandem's ParamsError,
# InputError, DataError, SearchSpaceError, ...) and missing or unreadable files (OSError). Anything
# else (TypeError, KeyError, AttributeError, ...) is a bug, reported with its type and file:line.
EXPECTED_ERRORS = (ValueError, OSError)
DEBUG_VAR = "TANDEM_DEBUG"


def debugging() -> bool:
    """``TANDEM_DEBUG=1`` (any value but 0/false/no/off): errors re-raise with their traceback."""
    return os.environ.get(DEBUG_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU (or host) out of memory, without importing torch: ``torch.cuda.OutOfMemoryError`` by
    name, the plain RuntimeError older torch (and MPS) raise with that message, or MemoryError."""
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or isinstance(exc, MemoryError)
        or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else ""


def _origin(exc: BaseException) -> str:
    """``file:line`` where the error was raised: the innermost frame in stages or tandem library
    code (the likeliest place to look), else the innermost frame; relative to cwd when below it."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    here = Path(__file__).resolve()
    ours = [
        frame
        for frame in frames
        if Path(frame.filename).parent.name == "stages"
        or (
            Path(frame.filename).resolve().parent == here.parent
            and Path(frame.filename).resolve() != here  # the runner is never the place to look
        )
    ]
    frame = (ours or frames)[-1]
    path = Path(frame.filename)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return f"{path.as_posix()}:{frame.lineno}"


def describe_failure(exc: Exception, where: str, oom_hint: str) -> str:
    """The message for an exception that stopped ``where`` (e.g. "stage train"): the error as it
    is for expected ones; for out-of-memory what to change; for anything else its type, origin
    and how to see the traceback."""
    if is_out_of_memory(exc):
        kind = "host memory" if isinstance(exc, MemoryError) else "GPU memory"
        detail = _first_line(exc) or type(exc).__name__
        return f"error in {where}: ran out of {kind} ({detail})\n  {oom_hint}"
    if isinstance(exc, EXPECTED_ERRORS):
        return f"error in {where}: {exc}"
    text = _first_line(exc)
    origin = _origin(exc)
    return (
        f"error in {where}: {type(exc).__name__}{': ' + text if text else ''}"
        f"{' (at ' + origin + ')' if origin else ''}\n"
        f"  unexpected; run again with {DEBUG_VAR}=1 for the full traceback"
    )


def fail(exc: Exception, where: str, oom_hint: str) -> NoReturn:
    """Report ``exc`` in a line or two and exit 1; under TANDEM_DEBUG re-raise it unchanged.
    typer's own Exit/Abort pass through, and KeyboardInterrupt is no Exception (typer exits 130)."""
    if isinstance(exc, typer.Exit | typer.Abort) or debugging():
        raise exc
    from rich.markup import escape

    from tandem.console import console

    prefix, colon, body = describe_failure(exc, where, oom_hint).partition(": ")
    message = f"[red]{escape(prefix)}{colon}[/red]{escape(body)}"
    console.print(message, highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


def stage_oom_hint(name: str, dataset: str | None) -> str:
    """What to change when a stage runs out of GPU memory, in the section its estimator reads."""
    if name in ("train", "cv", "tune"):
        section = "tune.estimator" if name == "tune" else "train"
        own = (
            f", or datasets.{dataset}.train.* if the entry sets its own" if name == "train" else ""
        )
        return (
            f"try a smaller batch (--set {section}.batch_size=32) or the CPU "
            f"(--set {section}.device=cpu){own}"
        )
    return "free the GPU (another process may hold its memory) or hide it: CUDA_VISIBLE_DEVICES="


def run_stage(
    name: str, params_file: Path, overrides: list[str], dataset: str | None = None
) -> None:
    """Validate params first (nothing is written on a bad key), then run the stage."""
    from rich.markup import escape

    from tandem.console import console

    try:
        root = project_root()
        params_path = params_file if params_file.is_absolute() else Path.cwd() / params_file
        params = load_params(params_path, overrides)
        dataset = stage_dataset(name, params, dataset)
    except (ParamsError, StageError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for note in shadowed(params, overrides, dataset) if dataset else ():
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    os.chdir(root)  # stage paths are relative to the project root, as in dvc.yaml
    where = f"stage {name}" + (f" (data set {dataset})" if dataset else "")
    # one writer per entry: every stage that writes an entry's outputs holds its lock (the
    # search stages and summary, their own); torchrun's ranks run under their launcher's
    under_torchrun = bool(os.environ.get("WORLD_SIZE"))
    what = f"tandem {name}" + (f" --dataset {dataset}" if dataset else "")
    key = dataset if name in PER_DATASET else name
    try:
        with contextlib.nullcontext() if under_torchrun else io.writer_lock(root, key, what):
            stage = load_stage(name, root)
            view = restrict(params, stage_params(stage, dataset))
            nproc = stage.processes(view, dataset) if hasattr(stage, "processes") else 1
            if nproc > 1 and not under_torchrun:  # start torchrun, which runs the stage
                from tandem import training

                argv = [name, "--params", str(params_path), *[f"--set={o}" for o in overrides]]
                dataset_args = ["--dataset", dataset] * bool(dataset)
                training.launch(nproc, ["tandem.cli", *argv, *dataset_args])
            else:
                stage.run(view, dataset)
    except io.LockedError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - reported in a line or two; TANDEM_DEBUG re-raises
        fail(exc, where, stage_oom_hint(name, dataset))


ParamsOption = Annotated[
    Path, typer.Option("--params", help="params file (YAML), relative to the current directory")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a param: --set train.lr=0.003 (repeatable)"),
]


DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="run for this entry of params.yaml's datasets (NAME)"),
]


def _add_stage_command(name: str, help_text: str) -> None:
    if name in PER_DATASET or name in SEARCH_STAGES:

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


def _recipe_params(
    file: str, keys: list[str] | None, raw: dict, stage: str, problems: list[str]
) -> list[str]:
    """The params.yaml keys a recipe file stands for: recipes/NAME/SECTION.yaml (or some of its
    keys) is the shared SECTION (or SECTION.key) with datasets.NAME.SECTION merged over it;
    recipes/NAME/labels.yaml is datasets.NAME.label_names."""
    from tandem.config import OVERRIDABLE

    parts = file.split("/")
    if file == "params.yaml":
        return []
    if len(parts) != 3 or parts[0] != "recipes" or not parts[2].endswith(".yaml"):
        problems.append(f"stage {stage}: params file {file!r} is neither params.yaml nor a recipe")
        return []
    name, section = parts[1], parts[2].removesuffix(".yaml")
    if section == "labels" and name in (raw.get("datasets") or {}) and not keys:
        return [f"datasets.{name}.label_names"]  # the entry's label_names, written by resolve
    if section not in OVERRIDABLE or name not in (raw.get("datasets") or {}):
        problems.append(f"stage {stage}: {file!r} is no recipe of an entry's section")
        return []
    for k in keys or ():
        if dotted_value(raw, f"{section}.{k}") is ABSENT:
            problems.append(f"stage {stage}: {file} has no key {k!r} ({section}.{k})")
    shared = [section] if not keys else [f"{section}.{k}" for k in keys]
    return [*shared, f"datasets.{name}.{section}"]


def dvc_params_problems(root: Path, raw: dict) -> list[str]:
    """Where dvc.yaml and params.yaml disagree: a declared key that params.yaml lacks, or a stage
    whose module reads other keys than dvc.yaml declares (DVC would miss their changes)."""
    instances, problems = stage_instances(root, raw)
    for stage_name, body, _ in instances:
        declared = []
        for entry in body.get("params", []):
            names = entry if isinstance(entry, str) else [
                k for file, ks in entry.items() if file == "params.yaml" for k in ks
            ]  # fmt: skip
            for item in [names] if isinstance(names, str) else names:
                declared.append(item)
                if dotted_value(raw, item) is ABSENT:
                    problems.append(f"stage {stage_name}: params key {item!r} is not in params")
            for file, keys in entry.items() if isinstance(entry, dict) else ():
                declared += _recipe_params(file, keys, raw, stage_name, problems)
        command = stage_command(body, STAGES)
        if command is not None:
            try:
                module = load_stage(command[0], root)
            except Exception as exc:  # noqa: BLE001 - a broken stage module is a problem to name
                problems.append(
                    f"stage {stage_name}: cannot import stages/{command[0]}.py: "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            reads = list(stage_params(module, command[1]))
            if sorted(reads) != sorted(declared):
                problems.append(
                    f"stage {stage_name}: dvc.yaml declares params {sorted(declared)} but "
                    f"stages/{command[0]}.py reads {sorted(reads)}"
                )
    return problems


def registry_notes(root: Path, raw: dict) -> list[str]:
    """The model registry (dvc.yaml's ``artifacts``) against params.yaml's ``datasets``: an
    entry whose model is not declared as an artifact, and an artifact whose model no entry
    trains. Notes, not errors: the pipeline runs either way."""
    import yaml

    artifacts = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get(
        "artifacts"
    ) or {}
    entries = set(raw.get("datasets") or {})
    declared = {str(a.get("path", "")).rstrip("/"): n for n, a in artifacts.items()}
    notes = [
        f"datasets.{name}: its model models/{name}/model is not in dvc.yaml's artifacts (the "
        f"model registry); add `{name}-model: {{path: models/{name}/model, type: model}}`"
        for name in sorted(entries) if f"models/{name}/model" not in declared
    ]  # fmt: skip
    notes += [
        f"artifact {artifact}: {path} is no registry entry's model (params.yaml's datasets)"
        for path, artifact in sorted(declared.items())
        if not (path.startswith("models/") and path.endswith("/model") and path[7:-6] in entries)
    ]
    return notes


def module_problems(root: Path, params: Any) -> list[str]:
    """Each entry's module (a registered one, or its own class, ``nets/FILE.py:Class``,
    imported from the project root) checked against the arguments its train stage passes, its
    own loss class too; and each file its recipe hashes (``init_weights``, the module's and the
    loss's files) readable."""
    from tandem import config

    if not (root / "stages/train.py").is_file():  # a project without the train stage
        return []
    train, problems, cwd = load_stage("train", root), [], Path.cwd()
    os.chdir(root)  # references are paths in the project
    try:
        for name, entry in params.datasets.items():
            try:
                train.check_module(config.recipe(params, name, "train"), entry.data)
            except ValueError as exc:
                problems.append(f"datasets.{name}.{exc}")
    finally:
        os.chdir(cwd)
    return problems


@app.command()
def check(params: ParamsOption = Path("params.yaml"), set_: SetOption = None) -> None:
    """Validate params.yaml (and overrides), and check dvc.yaml against the code: each stage
    declares exactly the params keys it reads, all of them present, and lists in its deps every
    tandem/stages source file it imports. Runs nothing."""
    import yaml

    try:
        loaded = load_params(params, set_ or [])
        root = project_root(params.resolve().parent)
        raw = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
        problems = dvc_params_problems(root, raw) + module_problems(root, loaded)
        code_problems = code_dep_problems(root, raw, STAGES)
        notes = registry_notes(root, raw)
    except (ParamsError, StageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if problems:
        typer.echo(
            "error: dvc.yaml and params.yaml disagree:\n  " + "\n  ".join(problems), err=True
        )
    if code_problems:
        typer.echo(
            "error: dvc.yaml misses code its stages run (DVC would not rerun them when it "
            "changes):\n  " + "\n  ".join(code_problems),
            err=True,
        )
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if problems or code_problems:
        raise typer.Exit(2)
    typer.echo(
        f"{params}: ok; dvc.yaml's params all present and matching the stage modules, and every "
        "stage lists the tandem/stages code it imports"
    )


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="an entry of params.yaml's datasets")],
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
) -> None:
    """Print the settings an entry actually runs with: each shared section merged with the
    entry's own overrides (the entry's own keys marked), as YAML. Runs nothing."""
    import yaml

    from tandem.config import OVERRIDABLE, resolve

    try:
        loaded = load_params(params, set_ or [])
        if name not in loaded.datasets:
            raise ParamsError(f"{name!r} is not in datasets {list(loaded.datasets)}")
    except ParamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    entry = loaded.datasets[name]

    def flow(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
        return text.strip().removesuffix("\n...")

    data = entry.data.model_dump(mode="json", exclude_defaults=True)
    lines = [f"# {name}: the effective settings (# own: the entry's override of the shared key)",
             f"data: {flow(data)}", f"label_names: {flow(entry.label_names)}"]  # fmt: skip
    for section in OVERRIDABLE:
        own = getattr(entry, section) or {}
        lines.append(f"{section}:")
        merged = resolve(getattr(loaded, section), entry, section).model_dump(mode="json")
        for key, value in merged.items():
            lines.append(f"  {key}: {flow(value)}" + ("   # own" if key in own else ""))
    typer.echo("\n".join(lines))


ModelDirOption = Annotated[
    Path | None,
    typer.Option("--model-dir", help="a model directory (the pipeline writes models/NAME)"),
]
ModelOfOption = Annotated[
    str | None,
    typer.Option("--dataset", help="the model of this entry of datasets: models/NAME"),
]


def model_directory(model_dir: Path | None, dataset: str | None) -> Path:
    """--model-dir as given, or models/NAME for --dataset NAME; one of the two is needed."""
    if (model_dir is None) == (dataset is None):
        raise typer.BadParameter(
            "give --dataset NAME (the pipeline's models/NAME) or --model-dir DIR, one of the two"
        )
    return model_dir if model_dir is not None else Path("models") / dataset


@app.command()
def weights(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="a .safetensors file, e.g. data/sources/weights/NAME.safetensors"
        ),
    ],
    dataset: ModelOfOption = None,
    model_dir: ModelDirOption = None,
) -> None:
    """Write a trained network's weights to a .safetensors file that another entry starts from
    (its train.init_weights), with metadata naming the network they fit."""
    from tandem.estimators.persistence import write_weights

    folder = model_directory(model_dir, dataset)
    if (folder / "model" / "config.json").is_file():  # the pipeline's models/NAME
        folder = folder / "model"
    try:
        result = write_weights(folder, output)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{result['tensors']} tensors of {result['module'] or 'a custom module'} -> {output}"
    )


BackendOption = Annotated[
    str, typer.Option("--backend", help="onnx (model.onnx in onnxruntime) or torch")
]


@app.command()
def predict(
    input: Annotated[Path, typer.Argument(help="CSV or parquet rows, a PNG, or a folder of PNGs")],
    dataset: ModelOfOption = None,
    model_dir: ModelDirOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="predictions file: .csv, .parquet or .json"),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="torch or onnx")] = "torch",
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="image classifiers: average the 1-pixel shifts; an export of an entry with "
            "evaluate.tta already serves them (both backends), so the flag changes nothing there",
        ),
    ] = False,
) -> None:
    """Predict labels and class probabilities for new data with the trained pipeline."""
    from tandem import inference

    model_dir = model_directory(model_dir, dataset)
    try:
        if backend not in ("torch", "onnx"):
            raise inference.InputError(f"--backend must be torch or onnx; got {backend!r}")
        if output is not None:
            inference.check_output_path(output)
        result = inference.predict_file(input, model_dir, backend=backend, tta=tta)
        if output is not None:
            inference.write_predictions(result, output)
    except (inference.InputError, FileNotFoundError, ValueError) as exc:
        if debugging():
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - reported in a line or two; TANDEM_DEBUG re-raises
        fail(exc, "predict", "predict fewer rows at a time (split the input file)")
    if output is None:
        typer.echo(result.to_csv(index=False), nl=False)
    else:
        typer.echo(f"{len(result)} predictions -> {output}", err=True)


@app.command()
def serve(
    dataset: ModelOfOption = None,
    model_dir: ModelDirOption = None,
    backend: BackendOption = "onnx",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    max_batch: Annotated[int, typer.Option(help="largest batch /predict accepts (rows)")] = 256,
    max_body_mb: Annotated[
        float, typer.Option(help="largest request body in MB: 413 before the rest is read")
    ] = 16.0,
    max_image_pixels: Annotated[
        int, typer.Option(help="most pixels an image may declare in its header: 413 beyond")
    ] = 4096 * 4096,
    threads: Annotated[int, typer.Option(help="inference threads (0: library default)")] = 0,
) -> None:
    """Serve the model over HTTP (FastAPI): /predict, /health, /metadata."""
    model_dir = model_directory(model_dir, dataset)
    try:
        from tandem.serve import serve as run_server
    except ImportError as exc:
        typer.echo(f"error: {exc}; install the serve extra: pip install 'tandem[serve]'", err=True)
        raise typer.Exit(1) from None
    try:
        run_server(model_dir, backend=backend, host=host, port=port, max_batch=max_batch,
                   max_body_mb=max_body_mb, max_image_pixels=max_image_pixels,
                   threads=threads)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        if debugging():
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - reported in a line or two; TANDEM_DEBUG re-raises
        fail(exc, "serve", "serve with a smaller --max-batch, or --backend onnx (CPU)")


if __name__ == "__main__":  # pragma: no cover
    app()
