"""fetch: the OpenML data set (through scikit-learn's cache) -> one parquet file + provenance."""

from stages.layout import layout
from tandem import console, data, io

PARAMS = ("fetch",)
TABULAR_PARAMS = (
    "fetch.data_home",
    "tabular.datasets.{name}.data_id",
    "tabular.datasets.{name}.target",
)


def run(params, dataset: str | None = None) -> None:
    source = params.fetch if dataset is None else params.tabular.datasets[dataset]
    paths = layout(dataset)
    with console.status(f"fetching OpenML data id {source.data_id}"):
        frame, provenance = data.fetch_openml_frame(
            source.data_id, target=source.target, data_home=params.fetch.data_home
        )
    io.write_parquet(paths.raw, frame)
    io.write_json(paths.provenance, provenance)
