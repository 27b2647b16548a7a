"""train: TorchClassifier on the preprocessed features; DVCLive logs every epoch."""

import statistics

from dvclive import Live
from stages.preprocess import TRAIN_FEATURES
from tandem import TorchClassifier, console, data, io
from tandem.training import DVCLiveCallback

PARAMS = ("train", "fetch.target")
MODEL = "models/model"
METRICS = "metrics/train.json"
LIVE_DIR = "dvclive"


def build_estimator(p, callbacks=()) -> TorchClassifier:
    """The estimator exactly as params.yaml's train section describes it."""
    return TorchClassifier(
        module=p.module,
        optimizer=p.optimizer,
        lr=p.lr,
        batch_size=p.batch_size,
        max_epochs=p.max_epochs,
        patience=p.patience,
        validation_fraction=p.validation_fraction,
        lr_schedule=p.lr_schedule,
        device=p.device,
        random_state=p.seed,
        callbacks=list(callbacks),
        optimizer__weight_decay=p.weight_decay,
        **{f"module__{key}": value for key, value in p.module_kwargs.items()},
    )


def run(params) -> None:
    p = params.train
    X, y = data.xy(io.read_parquet(TRAIN_FEATURES), params.fetch.target)
    with Live(dir=LIVE_DIR, save_dvc_exp=False, dvcyaml=False) as live:
        est = build_estimator(p, [DVCLiveCallback(live), console.EpochProgress(p.max_epochs)])
        est.fit(X, y)
    est.set_params(callbacks=None).save(MODEL)
    seconds = [record["seconds"] for record in est.history_]
    io.write_json(
        METRICS,
        {
            "epochs": est.n_iter_,
            "best_epoch": est.best_epoch_,
            "fit_seconds": round(est.fit_seconds_, 3),
            "seconds_per_epoch": round(statistics.median(seconds), 4),
            "device": str(est.device_),
            "best_valid_loss": min(
                (r["valid_loss"] for r in est.history_ if "valid_loss" in r), default=None
            ),
        },
    )
