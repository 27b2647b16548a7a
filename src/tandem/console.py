"""Progress output on stderr: rich when stderr is a terminal, silent otherwise (CI, DVC logs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console

console = Console(stderr=True)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner while a long step runs (fetching, fitting baselines)."""
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


class EpochProgress:
    """Training callback: a rich progress bar over epochs with the latest losses."""

    def __init__(self, total: int, description: str = "training"):
        self.total, self.description = total, description
        self._progress: Any = None

    def __deepcopy__(self, memo: dict) -> EpochProgress:
        return self  # one progress display, shared by clones (see DVCLiveCallback)

    def on_train_begin(self, estimator: Any) -> None:
        if not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
        )  # fmt: skip
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total, info="")

    def on_epoch_end(self, estimator: Any, record: dict) -> None:
        if self._progress is not None:
            info = " ".join(
                f"{k}={v:.4f}" for k, v in record.items() if k.startswith(("train_", "valid_"))
            )
            self._progress.update(self._task, advance=1, info=info)

    def on_train_end(self, estimator: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
