"""TorchClassifier and TorchRegressor: scikit-learn estimators around torch modules.

The constructor stores its arguments unchanged; ``fit`` validates, builds the module and trains
it. Nested arguments are routed by double underscore (``module__hidden_sizes``,
``optimizer__weight_decay``, ``criterion__...``, ``lr_schedule__...``, ``augment__...``) and
take part in ``get_params``/``set_params``/``clone`` like any other parameter.

The package, file by file:

- ``base``: the sklearn surface (params, routing, ``fit`` / ``partial_fit``, raw predictions);
- ``classifier``, ``regressor``: the two estimators;
- ``tables``: the names of routed prefixes, optimizers, criteria and schedules (search and tune
  check a search space against the same table);
- ``building``: the ``build_*`` methods (module, criterion, optimizer, schedule, augmentation);
- ``loop``: the training loop as overridable steps (``get_loss``, ``train_step``,
  ``validation_step``, ``iter_batches``, ``early_stopping``) over a typed ``LoopState``;
- ``checkpoint``: resuming an interrupted fit exactly;
- ``persistence``: ``save`` / ``load`` (safetensors and JSON, no pickle);
- ``ddp``: data-parallel fits under torchrun.
"""

from tandem.estimators.base import TorchEstimatorBase
from tandem.estimators.classifier import TorchClassifier
from tandem.estimators.loop import LoopState, Run, Step, TrainingSteps
from tandem.estimators.regressor import TARGET_SCALER_FILE, TorchRegressor
from tandem.estimators.tables import AUGMENTS, CRITERIA, OPTIMIZERS, ROUTED_PREFIXES, SCHEDULES

__all__ = [
    "AUGMENTS",
    "CRITERIA",
    "OPTIMIZERS",
    "ROUTED_PREFIXES",
    "SCHEDULES",
    "TARGET_SCALER_FILE",
    "LoopState",
    "Run",
    "Step",
    "TorchClassifier",
    "TorchEstimatorBase",
    "TorchRegressor",
    "TrainingSteps",
]
