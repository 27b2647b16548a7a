"""train: the torch estimator on the preprocessed features; DVCLive logs every epoch.

USPS: TorchClassifier with the image module from params. Tabular: the `mlp` module in a
TorchClassifier, or for regression a TorchRegressor on a standardised target
(TransformedTargetRegressor), whose fitted target scaler is saved inside the model directory.
With ``nproc`` > 1 the stage runs data-parallel under torchrun; rank 0 writes every output.
"""

import contextlib
import statistics

from sklearn.compose import TransformedTargetRegressor
from sklearn.preprocessing import StandardScaler

from dvclive import Live
from stages.layout import layout, timings
from tandem import TorchClassifier, TorchRegressor, config, console, data, io, training
from tandem.training import DVCLiveCallback

PARAMS = ("train", "fetch.target")
TABULAR_PARAMS = ("tabular.train", "tabular.datasets.{name}")


def estimator_kwargs(p, callbacks=()) -> dict:
    """The hyperparameters both params sections share, as estimator arguments."""
    return dict(
        optimizer=p.optimizer,
        lr=p.lr,
        batch_size=p.batch_size,
        max_epochs=p.max_epochs,
        patience=p.patience,
        validation_fraction=p.validation_fraction,
        lr_schedule=p.lr_schedule,
        device=p.device,
        amp=p.amp,
        compile=p.compile,
        random_state=p.seed,
        callbacks=list(callbacks),
        optimizer__weight_decay=p.weight_decay,
    )


def build_estimator(p, callbacks=(), checkpoint=None) -> TorchClassifier:
    """The USPS estimator exactly as params.yaml's train section describes it."""
    routed = {f"module__{key}": value for key, value in p.module_kwargs.items()}
    augment = None
    if p.augment is not None:  # random affine (and elastic) transforms of every training batch
        augment = "affine"
        routed |= {f"augment__{key}": value for key, value in p.augment.model_dump().items()}
    return TorchClassifier(
        module=p.module, checkpoint=checkpoint, augment=augment, ema=p.ema,
        criterion__label_smoothing=p.label_smoothing, **estimator_kwargs(p, callbacks), **routed,
    )  # fmt: skip


def build_tabular_estimator(p, task: str, callbacks=(), checkpoint=None):
    module = dict(
        module="mlp",
        module__hidden_sizes=tuple(p.hidden_sizes),
        module__dropout=p.dropout,
        module__activation=p.activation,
    )
    if task == "classification":
        return TorchClassifier(**module, checkpoint=checkpoint, **estimator_kwargs(p, callbacks))
    regressor = TorchRegressor(**module, checkpoint=checkpoint, **estimator_kwargs(p, callbacks))
    return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())


def section(params, dataset: str | None):
    """(train section, target column, task) of USPS or of a tabular set (with its overrides)."""
    if dataset is None:
        return params.train, params.fetch.target, "classification"
    spec = params.tabular.datasets[dataset]
    return config.tabular_train(params.tabular.train, spec.train), spec.target, spec.task


def processes(params, dataset: str | None = None) -> int:
    """How many data-parallel processes the runner starts this stage in (torchrun)."""
    return section(params, dataset)[0].nproc


def run(params, dataset: str | None = None) -> None:
    paths = layout(dataset)
    p, target, task = section(params, dataset)
    X, y = data.xy(io.read_parquet(paths.train_features), target)
    main = training.is_main_process()  # under torchrun, the other ranks train and write nothing
    # DVCLive logs into a folder that replaces live_dir only when training succeeds
    with io.atomic_dir(paths.live_dir) if main else contextlib.nullcontext() as live_dir:
        logger = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False) if main else None
        with logger or contextlib.nullcontext():
            callbacks = [DVCLiveCallback(logger), console.EpochProgress(p.max_epochs)]
            callbacks = callbacks if main else []
            # an interrupted run of the same params and data goes on from its last epoch
            if dataset is None:
                est = build_estimator(p, callbacks, paths.checkpoint)
            else:
                est = build_tabular_estimator(p, task, callbacks, paths.checkpoint)
            est.fit(X, y)
    if not main:
        return
    if isinstance(est, TransformedTargetRegressor):  # the scaler lands with the model, atomically
        torch_est = est.regressor_.set_params(callbacks=None, checkpoint=None)
        torch_est.save(paths.model, target_scaler=est.transformer_)
    else:
        torch_est = est.set_params(callbacks=None, checkpoint=None)
        torch_est.save(paths.model)
    io.write_json(
        paths.train_metrics,
        {
            "epochs": torch_est.n_iter_,
            "best_epoch": torch_est.best_epoch_,
            "device": str(torch_est.device_),
            "best_valid_loss": min(
                (r["valid_loss"] for r in torch_est.history_ if "valid_loss" in r), default=None
            ),
        },
    )
    seconds = [r["seconds"] for r in torch_est.history_ if "seconds" in r]  # this run's epochs
    io.write_json(
        timings("train", dataset),
        {
            "fit_seconds": round(torch_est.fit_seconds_, 3),
            "epochs_run": len(seconds),
            "seconds_per_epoch": round(statistics.median(seconds), 4) if seconds else None,
        },
    )
