"""tandem: scikit-learn and PyTorch in tandem under DVC."""

from typing import TYPE_CHECKING

__all__ = ["TorchClassifier", "TorchRegressor"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from tandem.estimators import TorchClassifier, TorchRegressor


def __getattr__(name: str):
    # imported on first use so that `tandem split` and friends start without loading torch
    if name in __all__:
        from tandem import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'tandem' has no attribute {name!r}")
