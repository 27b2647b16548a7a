"""One writer per entry, and a train stage whose outputs land together: a second `tandem train`
of an entry that is being trained fails at once naming the holder, and leaves the first run's
outputs whole and consistent; a train run that fails while saving leaves the last run's model,
record and logs, not the new logs beside the old model."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import time

from conftest import tool_env, usps_like
from typer.testing import CliRunner

from tandem import TorchClassifier

SETS = ["train.module=mlp", "datasets.usps.train={}", "train.min_steps=0", "train.max_epochs=%d"]


def args(epochs: int) -> list[str]:
    sets = [s.replace("%d", str(epochs)) for s in SETS]
    return ["train", "--dataset", "usps", *[w for s in sets for w in ("--set", s)]]


def outputs(project) -> tuple[int, int, int]:
    """(the model's epochs, DVCLive's rows, the train record's epochs)."""
    model = TorchClassifier.load(project / "models/usps/model")
    rows = (project / "dvclive/usps/plots/metrics/train_loss.tsv").read_text().splitlines()
    record = json.loads((project / "metrics/usps/train.json").read_text())
    return len(model.history_), len(rows) - 1, record["epochs"]


def test_a_second_writer_of_an_entry_fails_at_once_naming_the_first(project):
    usps_like(600, at=(project / "data/usps/features_train.parquet",))
    first = subprocess.Popen(["tandem", *args(40)], cwd=project, env=tool_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lock = project / ".tandem/locks/usps.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    start = time.monotonic()
    second = subprocess.run(["tandem", *args(3)], cwd=project, env=tool_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert time.monotonic() - start < 30 and first.poll() is None  # at once, while it trains
    message = " ".join(second.stderr.split()) + " ".join(second.stdout.split())
    assert second.returncode == 1, message
    assert re.search(rf"usps: another tandem process is writing its outputs \(pid {first.pid}, "
                     r"tandem train --dataset usps, since ", message), message  # fmt: skip
    assert first.wait(timeout=600) == 0, first.communicate()[1][-2000:]
    assert outputs(project) == (40, 40, 40)  # the first run's, whole
    assert not list(project.rglob(".*.tmp"))


def test_a_failed_save_leaves_the_last_runs_outputs_together(project, monkeypatch):
    from tandem import cli

    usps_like(200, at=(project / "data/usps/features_train.parquet",))
    monkeypatch.chdir(project)
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    assert CliRunner().invoke(cli.app, args(2)).exit_code == 0
    assert outputs(project) == (2, 2, 2)

    def full_disk(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(TorchClassifier, "save", full_disk)
    result = CliRunner().invoke(cli.app, args(3))
    assert result.exit_code == 1 and "No space left on device" in result.output
    monkeypatch.undo()
    assert outputs(project) == (2, 2, 2)  # model, logs and record: all the last run's
