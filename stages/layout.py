"""Where every stage reads and writes: each entry of params.yaml's ``datasets`` under its name.

One table of paths, so that the stage code is the same for every data set.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    name: str

    def _at(self, folder: str, file: str = "") -> str:
        return f"{folder}/{self.name}" + (f"/{file}" if file else "")

    @property
    def raw(self) -> str:
        return self._at("data", "raw.parquet")

    @property
    def provenance(self) -> str:
        return self._at("data", "raw.json")

    @property
    def train(self) -> str:
        return self._at("data", "train.parquet")

    @property
    def test(self) -> str:
        return self._at("data", "test.parquet")

    @property
    def train_features(self) -> str:
        return self._at("data", "features_train.parquet")

    @property
    def test_features(self) -> str:
        return self._at("data", "features_test.parquet")

    @property
    def models(self) -> str:
        return self._at("models")

    @property
    def preprocessor(self) -> str:
        return self._at("models", "preprocessor.skops")

    @property
    def model(self) -> str:
        return self._at("models", "model")

    @property
    def ensemble(self) -> str:
        """The ensemble stage's extra members (member-1, member-2, ...)."""
        return self._at("models", "ensemble")

    @property
    def checkpoint(self) -> str:
        return f"checkpoints/{self.name}.pt"

    @property
    def live_dir(self) -> str:
        return self._at("dvclive")

    def recipe(self, section: str) -> str:
        """recipes/<name>/<section>.yaml: the section as it reaches this entry (the params file
        its stages declare to DVC)."""
        return self._at("recipes", f"{section}.yaml")

    def metrics(self, kind: str) -> str:
        """metrics/<name>/<kind>.json: train, eval, baselines, export, ensemble."""
        return self._at("metrics", f"{kind}.json")

    def plot(self, kind: str) -> str:
        """plots/<kind>/<name>.json: plot data for `dvc plots`, one folder per chart (learning,
        validation, predictions, curves), one file per entry."""
        return f"plots/{kind}/{self.name}.json"

    def report(self, kind: str) -> str:
        """reports/<name>/<kind>.png: figures."""
        return self._at("reports", f"{kind}.png")


def layout(name: str) -> Layout:
    return Layout(name)


# Two kinds of files are deliberately not DVC outputs: training checkpoints (a persist output
# would turn off DVC's run-cache for the train stage) and wall-clock timings (they differ on every
# run, and an output that does would make dvc.lock differ between identical runs). Both are
# git-ignored.
def timings(stage: str, name: str) -> str:
    """Where a stage writes how long it took: logs/timings/<stage>@<data set>.json."""
    return f"logs/timings/{stage}@{name}.json"
