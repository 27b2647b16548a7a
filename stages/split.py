"""split: stratified seeded train/test split (or USPS's original ordered split)."""

from stages.fetch import RAW
from tandem import data, io

PARAMS = ("split", "fetch.target")
TRAIN = "data/split/train.parquet"
TEST = "data/split/test.parquet"


def run(params) -> None:
    p = params.split
    train, test = data.split_frame(
        io.read_parquet(RAW),
        target=params.fetch.target,
        method=p.method,
        test_size=p.test_size,
        seed=p.seed,
        n_train=p.n_train,
    )
    io.write_parquet(TRAIN, train)
    io.write_parquet(TEST, test)
