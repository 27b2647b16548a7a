"""fetch: the OpenML data set (through scikit-learn's cache) -> one parquet file + provenance."""

from tandem import console, data, io

PARAMS = ("fetch",)
RAW = "data/raw/usps.parquet"
PROVENANCE = "data/raw/usps.json"


def run(params) -> None:
    p = params.fetch
    with console.status(f"fetching OpenML data id {p.data_id}"):
        frame, provenance = data.fetch_openml_frame(
            p.data_id, target=p.target, data_home=p.data_home
        )
    io.write_parquet(RAW, frame)
    io.write_json(PROVENANCE, provenance)
