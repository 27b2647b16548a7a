"""split: stratified seeded train/test split (or USPS's original ordered split)."""

from stages.layout import layout
from tandem import data, io

PARAMS = ("split", "fetch.target")
TABULAR_PARAMS = ("tabular.split", "tabular.datasets.{name}.target")


def run(params, dataset: str | None = None) -> None:
    if dataset is None:
        p, target = params.split, params.fetch.target
        method, n_train = p.method, p.n_train
    else:
        p, target = params.tabular.split, params.tabular.datasets[dataset].target
        method, n_train = "random", 0
    paths = layout(dataset)
    train, test = data.split_frame(
        io.read_parquet(paths.raw),
        target=target,
        method=method,
        test_size=p.test_size,
        seed=p.seed,
        n_train=n_train,
    )
    io.write_parquet(paths.train, train)
    io.write_parquet(paths.test, test)
