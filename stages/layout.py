"""Where every stage reads and writes: USPS at the top level, each tabular data set under its name.

One table of paths, so that the stage code is the same for USPS and for every tabular data set.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    raw: str
    provenance: str
    train: str
    test: str
    preprocessor: str
    train_features: str
    test_features: str
    model: str
    checkpoint: str
    train_metrics: str
    live_dir: str
    eval_metrics: str
    baselines_metrics: str


USPS = Layout(
    raw="data/raw/usps.parquet",
    provenance="data/raw/usps.json",
    train="data/split/train.parquet",
    test="data/split/test.parquet",
    preprocessor="models/preprocessor.skops",
    train_features="data/features/train.parquet",
    test_features="data/features/test.parquet",
    model="models/model",
    checkpoint="checkpoints/usps.pt",
    train_metrics="metrics/train.json",
    live_dir="dvclive",
    eval_metrics="metrics/eval.json",
    baselines_metrics="metrics/baselines.json",
)


def tabular(name: str) -> Layout:
    data, models, metrics = (
        f"data/tabular/{name}",
        f"models/tabular/{name}",
        f"metrics/tabular/{name}",
    )
    return Layout(
        raw=f"{data}/raw.parquet",
        provenance=f"{data}/raw.json",
        train=f"{data}/train.parquet",
        test=f"{data}/test.parquet",
        preprocessor=f"{models}/preprocessor.skops",
        train_features=f"{data}/features_train.parquet",
        test_features=f"{data}/features_test.parquet",
        model=f"{models}/model",
        checkpoint=f"checkpoints/tabular-{name}.pt",
        train_metrics=f"{metrics}/train.json",
        live_dir=f"dvclive/tabular/{name}",
        eval_metrics=f"{metrics}/eval.json",
        baselines_metrics=f"{metrics}/baselines.json",
    )


def layout(dataset: str | None) -> Layout:
    return USPS if dataset is None else tabular(dataset)


# Two kinds of files are deliberately not DVC outputs: training checkpoints (a persist output
# would turn off DVC's run-cache for the train stage) and wall-clock timings (they differ on every
# run, and an output that does would make dvc.lock differ between identical runs). Both are
# git-ignored.
def timings(stage: str, dataset: str | None) -> str:
    """Where a stage writes how long it took: logs/timings/<stage>[@<data set>].json."""
    return f"logs/timings/{stage}{'' if dataset is None else '@' + dataset}.json"
