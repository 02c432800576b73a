"""The Ray Tune function trainable: one trial of a search, reported to Tune every epoch.

The search passes the decoded dataset with ``tune.with_parameters``, which puts each array into
Ray's object store once per experiment. Every trial on a node then maps the same read-only shared
memory, and the training loop gathers batches from it without copying the dataset.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from trainable.config import TrainConfig
from trainable.data import stratified_split
from trainable.loop import NonFiniteLossError, TrainData, Trainer, fit

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
# Prefix of the "error" entry in the last result of a trial whose training loss became NaN or
# infinite. results/experiment.py reads that entry as the trial's error.
NON_FINITE_LOSS = "non-finite loss"


def train_trial(
    config: dict[str, Any], *, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> None:
    """Validate the trial's config, train it with the one loop and report each epoch to Tune."""
    train_config = TrainConfig.from_dict(config)
    _limit_threads_to_trial_cpus()
    # Ray logs every checkpoint it persists at INFO level; one line per epoch is enough.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    train_idx, val_idx = stratified_split(labels, train_config.val_fraction, train_config.seed)
    trainer = Trainer(train_config, TrainData(images, labels, train_idx, val_idx, num_classes))

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.resume(Path(folder) / CHECKPOINT_NAME)
        logger.info("trial resumed after epoch %d", trainer.epoch)

    # Several nodes of one machine share an IP address, so the node id identifies where a trial ran.
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], trainer: Trainer) -> None:
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(Path(folder) / CHECKPOINT_NAME)
            tune.report(
                {**metrics, "node_id": node_id},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )

    try:
        fit(trainer, report)
    except NonFiniteLossError as err:
        report_non_finite_loss(trainer, err, node_id)


def report_non_finite_loss(trainer: Trainer, err: NonFiniteLossError, node_id: str) -> None:
    """Report a diverged trial's last result, which carries the reason, and end the trial.

    Raising would make Tune restart the trial from its last checkpoint up to ``max_failures``
    times, and the same config diverges again. So the trial reports the failed epoch with NaN
    validation metrics and no checkpoint, and returns. ASHA's cutoffs (np.nanpercentile) skip
    the NaN. OptunaSearch passes the NaN to the study, which records the trial as failed, so
    TPE does not model it.
    """
    reason = f"{NON_FINITE_LOSS}: {err}"
    logger.warning("trial stopped: %s", reason)
    tune.report(
        {
            "epoch": trainer.epoch + 1,  # the epoch that diverged; it did not complete
            "val_loss": math.nan,
            "val_acc": math.nan,
            "error": reason,
            "node_id": node_id,
        }
    )


def _limit_threads_to_trial_cpus() -> None:
    """Use as many intra-op threads as CPUs the trial reserved, so trials do not oversubscribe."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))
