"""tandem: scikit-learn and PyTorch in tandem under DVC."""

from tandem.estimators import TorchClassifier, TorchRegressor

__all__ = ["TorchClassifier", "TorchRegressor"]
__version__ = "0.1.0"
