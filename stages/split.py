"""split: stratified seeded train/test split, or ordered (the first n_train rows train)."""

from stages.layout import layout
from tandem import config, data, io

PARAMS = ("split", "datasets.{name}")


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    p = config.resolve(params.split, entry, "split")
    frame = io.read_parquet(paths.raw)
    n_train = p.n_train or round(len(frame) * (1 - p.test_size))
    train, test = data.split_frame(
        frame, target=entry.target, method=p.method, test_size=p.test_size, seed=p.seed,
        n_train=n_train, stratify=entry.task == "classification",
    )  # fmt: skip
    io.write_parquet(paths.train, train)
    io.write_parquet(paths.test, test)
