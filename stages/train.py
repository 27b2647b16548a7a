"""train: the torch estimator on the preprocessed features; DVCLive logs every epoch.

The module comes from the train section (``auto``: ``cnn`` for image entries, ``mlp`` for tabular
ones), with the image's shape from the entry. Batch size and epochs fit the size of the data
(``training.fit_length``). Regression trains a TorchRegressor on a standardised target
(TransformedTargetRegressor); the fitted target scaler is saved inside the model directory.
With ``nproc`` > 1 the stage runs data-parallel under torchrun; rank 0 writes every output.
"""

import contextlib
import statistics

from sklearn.compose import TransformedTargetRegressor
from sklearn.preprocessing import StandardScaler

from dvclive import Live
from stages.layout import layout, timings
from tandem import TorchClassifier, TorchRegressor, config, console, data, io, models, training
from tandem.training import DVCLiveCallback

PARAMS = ("train", "datasets.{name}.data", "datasets.{name}.train")


def module_params(p, spec) -> dict:
    """``module`` and its ``module__*`` arguments; image modules get the entry's image shape."""
    name = config.module_name(p, spec)
    kwargs = dict(p.module_kwargs.get(name, {}))
    if spec.modality == "image" and "image_shape" in (models.module_arguments(name) or ()):
        kwargs |= {"image_shape": list(spec.image_shape), "in_channels": spec.channels}
    return {"module": name, **{f"module__{k}": v for k, v in kwargs.items()}}


def check_module(p, spec) -> None:
    """Refuse, before anything is written, a module that the stage cannot build: a reference
    to a missing file or class, or a class whose arguments do not fit what the stage passes
    (n_features, n_outputs, the image's shape for image entries, module_kwargs)."""
    passed = module_params(p, spec)
    kwargs = [k.removeprefix("module__") for k in passed if k.startswith("module__")]
    try:
        models.check_arguments(passed["module"], ["n_features", "n_outputs", *kwargs])
    except ValueError as exc:
        raise config.ParamsError(f"train.module: {exc}") from None
    if models.is_reference(p.criterion):  # the project's own loss, built per row
        try:
            models.import_reference(p.criterion)(reduction="none")
        except (TypeError, ValueError) as exc:
            raise config.ParamsError(
                f"train.criterion: {p.criterion!r} cannot be built with reduction='none' "
                f"(tandem weighs each row's loss itself): {exc}"
            ) from None
    if p.criterion not in (None, "cross_entropy") and p.label_smoothing:
        raise config.ParamsError(
            f"train.label_smoothing={p.label_smoothing} is cross-entropy's; with train.criterion "
            f"{p.criterion!r} set it to 0"
        )


def build_estimator(p, spec, n_rows: int, callbacks=(), checkpoint=None):
    """The estimator exactly as the (resolved) train section ``p`` describes it, for an entry
    whose data is ``spec`` and ``n_rows`` training rows."""
    routed = {}
    if spec.modality == "image":  # the rows' image shape, for augmentation, TTA and predict
        routed["augment__shape"] = [spec.channels, *spec.image_shape]
    if p.augment is not None:  # random affine (and elastic) transforms of every training batch
        routed |= {f"augment__{key}": value for key, value in p.augment.model_dump().items()}
    n_fit = int(n_rows * (1 - p.validation_fraction))
    batch_size, epochs = training.fit_length(n_fit, p.batch_size, p.max_epochs, p.min_steps)
    kwargs = dict(
        **module_params(p, spec), optimizer=p.optimizer, lr=p.lr, batch_size=batch_size,
        max_epochs=epochs, patience=p.patience, validation_fraction=p.validation_fraction,
        lr_schedule=p.lr_schedule, device=p.device, amp=p.amp, compile=p.compile,
        random_state=p.seed, callbacks=list(callbacks), checkpoint=checkpoint, ema=p.ema,
        criterion=p.criterion,
        augment=None if p.augment is None else "affine", optimizer__weight_decay=p.weight_decay,
        init_weights=p.init_weights, freeze=p.freeze, **routed,
    )  # fmt: skip
    if spec.task == "classification":
        if p.criterion in (None, "cross_entropy"):  # cross-entropy's own argument
            kwargs["criterion__label_smoothing"] = p.label_smoothing
        return TorchClassifier(**kwargs)
    return TransformedTargetRegressor(
        regressor=TorchRegressor(**kwargs), transformer=StandardScaler()
    )


def processes(params, name: str) -> int:
    """How many data-parallel processes the runner starts this stage in (torchrun)."""
    return config.recipe(params, name, "train").nproc


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    p, spec = config.recipe(params, name, "train"), entry.data
    check_module(p, spec)
    X, y = data.xy(io.read_parquet(paths.train_features), spec.target)
    main = training.is_main_process()  # under torchrun, the other ranks train and write nothing
    # The outputs land together: DVCLive logs into a folder that replaces live_dir only after
    # the model and the train record are written, so a run that fails while training or
    # writing (a full disk included) leaves the last run's model, record and logs; what is left
    # is three renames in a row (model, record, logs), each atomic.
    with io.atomic_dir(paths.live_dir) if main else contextlib.nullcontext() as live_dir:
        logger = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False) if main else None
        with logger or contextlib.nullcontext():
            est = build_estimator(p, spec, len(X), checkpoint=paths.checkpoint)
            torch_est = est.regressor if isinstance(est, TransformedTargetRegressor) else est
            if main:
                progress = console.EpochProgress(torch_est.max_epochs)
                torch_est.set_params(callbacks=[DVCLiveCallback(logger), progress])
            # an interrupted run of the same params and data goes on from its last epoch
            est.fit(X, y)
        fitted = est.regressor_ if isinstance(est, TransformedTargetRegressor) else est
        transfer = getattr(fitted, "transfer_", None) if main else None
        if transfer is not None:  # init_weights: what was loaded, and what was not
            console.console.print(transfer.summary(), highlight=False, soft_wrap=True)
        if main:
            save(est, name, paths)
    training.leave_together()  # the other ranks wait here until rank 0 has written


def save(est, name: str, paths) -> None:
    """The model (with a regressor's target scaler, atomically), the train record, the timing."""
    if isinstance(est, TransformedTargetRegressor):
        torch_est = est.regressor_.set_params(callbacks=None, checkpoint=None)
        torch_est.save(paths.model, target_scaler=est.transformer_)
    else:
        torch_est = est.set_params(callbacks=None, checkpoint=None)
        torch_est.save(paths.model)
    io.write_json(
        paths.metrics("train"),
        {
            "epochs": torch_est.n_iter_,
            # the epoch of the saved weights (the last one unless early stopping restored an
            # earlier one) and their validation loss: the model's, not the run's lowest
            "best_epoch": torch_est.best_epoch_,
            "batch_size": torch_est.batch_size,
            "device": str(torch_est.device_),
            "best_valid_loss": torch_est.history_[torch_est.best_epoch_ - 1].get("valid_loss"),
        },
    )
    seconds = [r["seconds"] for r in torch_est.history_ if "seconds" in r]  # this run's epochs
    io.write_json(
        timings("train", name),
        {
            "fit_seconds": round(torch_est.fit_seconds_, 3),
            "epochs_run": len(seconds),
            "seconds_per_epoch": round(statistics.median(seconds), 4) if seconds else None,
        },
    )
