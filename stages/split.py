"""split: stratified seeded train/test split, or ordered (the first n_train rows train)."""

from stages.layout import layout
from tandem import config, data, io

PARAMS = ("split", "datasets.{name}.data", "datasets.{name}.split")


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    p, spec = config.recipe(params, name, "split"), entry.data
    frame = io.read_parquet(paths.raw)
    n_train = p.n_train or round(len(frame) * (1 - p.test_size))
    train, test = data.split_frame(
        frame, target=spec.target, method=p.method, test_size=p.test_size, seed=p.seed,
        n_train=n_train, stratify=spec.task == "classification",
    )  # fmt: skip
    io.write_parquet(paths.train, train)
    io.write_parquet(paths.test, test)
