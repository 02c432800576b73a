"""One fixed-format line per trial event on the terminal; the Ray dashboard has the full view."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

# Config keys shown when a trial starts, in this order; the rest is in params.json and Parquet.
SHOWN_KEYS = ("depth", "stem", "dropout", "batch_size", "lr", "scheduler", "augment")


def describe_config(config: dict[str, Any]) -> str:
    parts = []
    for key in SHOWN_KEYS:
        if key not in config:
            continue
        value = config[key]
        parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


class EpochLines(tune.Callback):
    """Print a line when a trial starts, after each of its epochs, and when it ends or fails."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self.started = time.monotonic()

    def _print(self, trial_id: str, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.0f} s] trial {trial_id}  {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._print(trial.trial_id, f"started: {describe_config(trial.config)}")

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self._print(trial.trial_id, "restored from its last checkpoint")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if isinstance(result.get("error"), str):  # the last result of a diverged trial
            self._print(trial.trial_id, f"failed: {result['error']}")
            return
        if "val_acc" not in result:
            return
        self._print(
            trial.trial_id,
            f"epoch {result['epoch']:>3}/{self.max_epochs}  val_acc {result['val_acc']:.4f}  "
            f"train_loss {result['train_loss']:.4f}  {result['images_per_second']:.0f} img/s",
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if isinstance((trial.last_result or {}).get("error"), str):
            return  # on_trial_result printed why the trial failed
        epochs = (trial.last_result or {}).get("epoch", 0)
        outcome = "completed" if epochs >= self.max_epochs else "stopped by the scheduler"
        self._print(trial.trial_id, f"{outcome} after {epochs} epochs")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._print(trial.trial_id, "failed; its error is in the trial folder's error.txt")
